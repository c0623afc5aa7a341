"""Export a frozen dataset version.

python manage.py export_version VERSION_ID --format parquet|folder|webdataset|all --out DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from curation.models import DatasetVersion
from curation.services.exports import FORMATS, ExportError, export_version


class Command(BaseCommand):
    help = "Write a frozen DatasetVersion as Parquet, an image folder or WebDataset shards."

    def add_arguments(self, parser) -> None:
        parser.add_argument("version_id", type=int)
        parser.add_argument("--format", required=True, choices=[*FORMATS, "all"])
        parser.add_argument("--out", required=True, help="Folder to write (created if needed).")
        parser.add_argument("--shard-size", type=int, default=1000, help="WebDataset samples/tar.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        version = (
            DatasetVersion.objects.select_related("dataset")
            .filter(pk=options["version_id"])
            .first()
        )
        if version is None:
            raise CommandError(f"no dataset version #{options['version_id']}")
        formats = list(FORMATS) if options["format"] == "all" else [options["format"]]
        out = Path(options["out"])
        results = {}
        for fmt in formats:
            target = out / fmt if len(formats) > 1 else out
            bar = tqdm(
                total=version.row_count,
                desc=fmt,
                unit="img",
                disable=options["json"],
                file=sys.stderr,
            )
            try:
                result = export_version(
                    version,
                    fmt,
                    target,
                    shard_size=options["shard_size"],
                    on_progress=lambda n, _total, bar=bar: bar.update(n - bar.n),
                )
            except ExportError as exc:
                raise CommandError(str(exc)) from exc
            finally:
                bar.close()
            results[fmt] = result.to_json()
            if not options["json"]:
                splits = ", ".join(f"{k} {v}" for k, v in sorted(result.splits.items()))
                self.stdout.write(f"{version} as {fmt}: {result.rows} rows ({splits}) in {target}")
        if options["json"]:
            self.stdout.write(json.dumps(results))
