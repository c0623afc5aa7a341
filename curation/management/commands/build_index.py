"""Build the next FAISS index version of an embedding space from its finished shards.

python manage.py build_index --space NAME [--spec "IVF1024,SQ8"] [--json] [--async]
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from curation.models import EmbeddingSpace
from curation.services.indexes import build_vector_index, enqueue_build_index


class Command(BaseCommand):
    help = "Build a versioned FAISS index (type chosen by size) and measure its recall@k."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--space", required=True, help="Embedding space name.")
        parser.add_argument("--spec", default=None, help="faiss factory string; default: by size.")
        parser.add_argument("--async", dest="run_async", action="store_true", help="Enqueue a job.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        space = EmbeddingSpace.objects.filter(name=options["space"]).first()
        if space is None:
            raise CommandError(f"--space {options['space']!r}: no such embedding space")
        if options["run_async"]:
            job = enqueue_build_index(space)
            self.stdout.write(json.dumps({"job": job.pk}) if options["json"] else f"job {job.pk}")
            return
        try:
            index = build_vector_index(space, spec=options["spec"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        summary = {
            "space": space.name,
            "version": index.version,
            "index_type": index.index_type,
            "vector_count": index.vector_count,
            f"recall_at_{index.recall_k}": index.recall_at_k,
            f"text_recall_at_{index.recall_k}": index.text_recall_at_k,
            "path": index.path,
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary))
        else:
            self.stdout.write(", ".join(f"{k}: {v}" for k, v in summary.items()))
