"""Import or export a recipe's accept/reject decisions as CSV.

python manage.py review_decisions RECIPE FILE.csv            # read rows sha256,decision
python manage.py review_decisions RECIPE FILE.csv --export   # write them (FILE "-" = stdout)
Decisions are `accept` or `reject`; a header row `sha256,decision` is optional. Imported rows are
recorded as if made in the grid: the recipe's next run uses them as gold. Rows naming an unknown
image or decision are reported with their line numbers; every other row is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from curation.models import Recipe
from curation.services.decisions import export_decisions, import_decisions
from curation.services.recipes import ensure_heuristics_recipe


class Command(BaseCommand):
    help = "Import (default) or --export a recipe's review decisions as sha256,decision CSV."

    def add_arguments(self, parser) -> None:
        parser.add_argument("recipe", help="Recipe name (`heuristics` is built in).")
        parser.add_argument("file", help="CSV file; with --export, '-' writes to stdout.")
        parser.add_argument("--export", action="store_true", help="Write decisions out.")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["recipe"]
        recipe = Recipe.objects.filter(name=name).first()
        if recipe is None and name == "heuristics":
            recipe = ensure_heuristics_recipe()
        if recipe is None:
            raise CommandError(f"no recipe named {name!r} (create it in the admin)")
        target = options["file"]
        if options["export"]:
            if target == "-":
                count = export_decisions(recipe, self.stdout)
            else:
                try:
                    with Path(target).open("w", encoding="utf-8", newline="") as out:
                        count = export_decisions(recipe, out)
                except OSError as exc:
                    raise CommandError(f"{target}: cannot write ({exc})") from exc
                self.stdout.write(f"wrote {count} decisions of {recipe} to {target}")
            return
        try:
            report = import_decisions(recipe, target)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        for error in report.errors:
            self.stderr.write(f"{target}: {error}")
        self.stdout.write(
            f"{recipe}: recorded {report.accepted} accepted and {report.rejected} rejected "
            f"decisions ({report.applied_to_run} shown in the latest run's grid); "
            f"{len(report.errors)} row(s) skipped"
        )
        if not report.recorded and report.errors:
            raise CommandError(f"{target}: no row could be recorded")
        if not report.recorded:
            raise CommandError(f"{target}: no decision rows found")
