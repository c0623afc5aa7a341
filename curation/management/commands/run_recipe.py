"""Run a recipe over the pool.

python manage.py run_recipe NAME            # progress bar, then a summary and the LF table
python manage.py run_recipe NAME --json     # [{sha256, path, score, label}] sorted by score
python manage.py run_recipe NAME --async    # enqueue a recipe_run job
`heuristics` is built in: it is created as a Recipe row on first use and needs no CLIP weights.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from curation.models import EmbeddingSpace, Recipe, RecipeScore
from curation.services.recipes import ensure_heuristics_recipe, run_recipe_job, start_recipe_run


class Command(BaseCommand):
    help = "Score the pool with a recipe; scores and LF stats are kept as a RecipeRun."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="Recipe name (`heuristics` is built in).")
        parser.add_argument("--space", default=None, help="Embedding space (default: latest).")
        parser.add_argument("--async", dest="run_async", action="store_true", help="Enqueue a job.")
        parser.add_argument("--json", action="store_true", help="Print scores as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        recipe = Recipe.objects.filter(name=name).first()
        if recipe is None and name == "heuristics":
            recipe = ensure_heuristics_recipe()
        if recipe is None:
            raise CommandError(f"no recipe named {name!r} (create it in the admin)")
        space = None
        if options["space"]:
            space = EmbeddingSpace.objects.filter(name=options["space"]).first()
            if space is None:
                raise CommandError(f"--space {options['space']!r}: no such embedding space")
        try:
            run = start_recipe_run(recipe, space=space, run_async=options["run_async"])
            if options["run_async"]:
                self.stdout.write(json.dumps({"run": run.pk, "job": run.job_id}))
                return
            with tqdm(desc=name, unit="img", disable=options["json"], file=sys.stderr) as bar:

                def progress(done: int, total: int, message: str) -> None:
                    bar.total = total
                    bar.set_postfix_str(message)
                    bar.update(done - bar.n)

                run = run_recipe_job(run, progress=progress)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        scores = (
            RecipeScore.objects.filter(run=run)
            .select_related("image")
            .order_by("-score", "image_id")
        )
        if options["json"]:
            rows = [
                {
                    "sha256": s.image.sha256,
                    "path": s.image.origin,
                    "score": round(s.score, 6),
                    "label": s.weak_label,
                }
                for s in scores.iterator(chunk_size=2000)
            ]
            self.stdout.write(json.dumps(rows))
            return
        stats = run.stats
        self.stdout.write(
            f"{run}: {stats['candidates']} scored, {stats['above_threshold']} at or above "
            f"threshold {stats['threshold']} ({stats['label_model']}, {stats['seconds']} s)"
        )
        self.stdout.write(f"{'LF':<24}{'coverage':>10}{'overlap':>10}{'conflict':>10}")
        for lf in stats["lf"]:
            self.stdout.write(
                f"{lf['name']:<24}{lf['coverage']:>10.2f}{lf['overlap']:>10.2f}{lf['conflict']:>10.2f}"
            )
