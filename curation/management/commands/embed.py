"""Embed the pool's OK images into an embedding space, one shard at a time.

python manage.py embed --space NAME [--model tiny-clip] [--weights PATH] [--shard-size N]
python manage.py embed --space NAME --async      # one cpu job per shard, for many workers
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from curation.services.embeddings import (
    DEFAULT_SHARD_SIZE,
    enqueue_embedding,
    ensure_space,
    pending_shards,
    plan_embedding,
    run_embed_shard,
)


class Command(BaseCommand):
    help = "Embed images not embedded yet into --space (created from --model/--weights)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--space", required=True, help="Embedding space name (a folder).")
        parser.add_argument("--model", default="tiny-clip", help="open_clip architecture name.")
        parser.add_argument("--weights", default=None, help="Local .safetensors/.pt weights.")
        parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
        parser.add_argument("--async", dest="run_async", action="store_true", help="Enqueue jobs.")
        parser.add_argument("--json", action="store_true", help="Print one JSON summary object.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            space = ensure_space(options["model"], options["weights"], name=options["space"])
            planned = plan_embedding(space, options["shard_size"])
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from exc
        summary: dict[str, Any] = {"space": space.name, "planned_shards": len(planned)}
        if options["run_async"]:
            summary["jobs"] = [job.pk for job in enqueue_embedding(space)]
        else:
            summary.update(self._run(space, quiet=options["json"]))
        if options["json"]:
            self.stdout.write(json.dumps(summary))
        else:
            self.stdout.write(", ".join(f"{k}: {v}" for k, v in summary.items()))

    def _run(self, space: Any, quiet: bool) -> dict[str, Any]:
        shards = list(pending_shards(space))
        embedded = failures = 0
        with tqdm(desc=f"embed {space.name}", unit="img", disable=quiet, file=sys.stderr) as bar:
            for shard in shards:
                start = bar.n

                def progress(done: int, total: int, start: int = start) -> None:
                    bar.update(start + done - bar.n)

                result = run_embed_shard(shard, progress=progress)
                embedded += result["count"]
                failures += result.get("failures", 0)
        return {"shards_run": len(shards), "embedded": embedded, "failures": failures}
