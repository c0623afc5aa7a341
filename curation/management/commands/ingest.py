"""Ingest folders, archives, manifests or URLs into the image pool.

python manage.py ingest PATH... --source NAME            # progress bar, readable summary
python manage.py ingest PATH... --source NAME --json     # one JSON object on stdout
python manage.py ingest PATH... --source NAME --async    # enqueue a cpu job, print its id
python manage.py ingest --resume BATCH_ID                # finish a cancelled/killed batch
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from curation.models import IngestBatch
from curation.selectors.ingest import ingest_summary
from curation.services.ingest import create_batch, enqueue_ingest, run_ingest

PRINTED_REFUSALS = 50


class Command(BaseCommand):
    help = "Validate, deduplicate and store images from PATHs; refused files are listed."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "paths", nargs="*", metavar="PATH", help="Folder, archive, manifest, URL."
        )
        parser.add_argument("--source", help="Source name (a slug); created if new.")
        parser.add_argument("--json", action="store_true", help="Print one JSON summary object.")
        parser.add_argument("--async", dest="run_async", action="store_true", help="Enqueue a job.")
        parser.add_argument("--resume", type=int, metavar="BATCH_ID", help="Resume this batch.")
        parser.add_argument("--workers", type=int, default=None, help="Decode threads.")

    def handle(self, *args: Any, **options: Any) -> None:
        paths, source, resume = options["paths"], options["source"], options["resume"]
        if resume is None and (not paths or not source):
            raise CommandError("give PATH... and --source NAME (or --resume BATCH_ID)")
        batch = None
        if resume is not None:
            batch = IngestBatch.objects.filter(pk=resume).first()
            if batch is None:
                raise CommandError(f"no ingest batch #{resume}")
        try:
            if options["run_async"]:
                self._enqueue(paths, source, batch, options["json"])
                return
            batch = self._run(paths, source, batch, options)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        summary = ingest_summary(batch)
        if options["json"]:
            self.stdout.write(json.dumps(summary))
        else:
            self._print_summary(batch, summary)

    def _enqueue(self, paths: list[str], source: str | None, batch: Any, as_json: bool) -> None:
        if batch is not None:
            raise CommandError("--resume runs in this process; retry the batch's job instead")
        batch = enqueue_ingest(paths, source)
        if as_json:
            self.stdout.write(json.dumps({"job": batch.job_id, "batch": batch.pk}))
        else:
            self.stdout.write(f"enqueued ingest job {batch.job_id} (batch #{batch.pk})")

    def _run(self, paths: list[str], source: str | None, batch: Any, options: Any) -> IngestBatch:
        bars: list[tqdm] = []  # made on the first report, once the total is known

        def progress(done: int, total: int | None) -> None:
            if not bars:
                bars.append(
                    tqdm(
                        desc="ingest",
                        total=total,
                        unit="file",
                        disable=options["json"],
                        file=sys.stderr,
                        dynamic_ncols=True,
                    )
                )
            bars[0].update(done - bars[0].n)

        if batch is None:
            batch = create_batch(paths, source)
        try:
            return run_ingest(
                None,
                None,
                batch=batch,
                on_progress=progress,
                workers=options["workers"],
            )
        except KeyboardInterrupt:
            raise CommandError(
                f"interrupted; finish it with: manage.py ingest --resume {batch.pk}"
            ) from None
        finally:
            for bar in bars:
                bar.close()

    def _print_summary(self, batch: IngestBatch, summary: dict[str, Any]) -> None:
        counts = summary["counts"]
        self.stdout.write(f"ingest #{batch.pk} into source {batch.source.name}: {batch.status}")
        for label, key in [
            ("ingested", "ingested"),
            ("exact duplicates", "duplicate"),
            ("near-duplicates", "near_duplicate"),
            ("refused", "quarantined"),
        ]:
            self.stdout.write(f"  {label:<17}{counts[key]:>8}")
        refusals = summary["refusals"]
        if refusals:
            self.stdout.write("refused files:")
            for refusal in refusals[:PRINTED_REFUSALS]:
                self.stdout.write(f"  {refusal['path']}: {refusal['reason']}")
            if len(refusals) > PRINTED_REFUSALS:
                more = len(refusals) - PRINTED_REFUSALS
                self.stdout.write(f"  … {more} more, listed on the batch in the admin")
