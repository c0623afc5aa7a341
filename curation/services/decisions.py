"""A recipe's accept/reject decisions: recorded from the grid or a CSV, and read back as gold.

Decisions belong to the recipe, not to one run: a decision made in run 3's grid is gold for run 4.
Each image has at most one decision per recipe (the latest wins); setting a grid tile back to
"unreviewed" removes it. "Accept all above threshold" is not recorded here: it accepts images
for the freeze but teaches nothing, since it would hand the model its own guesses as truth.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction

from curation.models import Image, Recipe, RecipeDecision, RecipeRun, RecipeScore

BATCH = 2000
CSV_DECISIONS = {
    "accept": RecipeDecision.Decision.ACCEPTED,
    "reject": RecipeDecision.Decision.REJECTED,
}
CSV_WORDS = {value: word for word, value in CSV_DECISIONS.items()}


def record_decisions(
    recipe: Recipe,
    decisions: Mapping[int, str],
    *,
    origin: str = RecipeDecision.Origin.GRID,
    run: RecipeRun | None = None,
    user: Any = None,
) -> int:
    """Upsert image id → accepted/rejected/unreviewed for `recipe`; returns rows written."""
    allowed = {*RecipeDecision.Decision.values, RecipeScore.Decision.UNREVIEWED}
    bad = sorted({d for d in decisions.values() if d not in allowed})
    if bad:
        raise ValueError(f"decision {bad[0]!r}: expected one of {sorted(allowed)}")
    cleared = [i for i, d in decisions.items() if d == RecipeScore.Decision.UNREVIEWED]
    kept = [
        RecipeDecision(
            recipe=recipe,
            image_id=image_id,
            decision=decision,
            origin=origin,
            run=run,
            decided_by=user if getattr(user, "pk", None) else None,
        )
        for image_id, decision in decisions.items()
        if decision != RecipeScore.Decision.UNREVIEWED
    ]
    with transaction.atomic():
        for start in range(0, len(cleared), BATCH):
            RecipeDecision.objects.filter(
                recipe=recipe, image_id__in=cleared[start : start + BATCH]
            ).delete()
        RecipeDecision.objects.bulk_create(
            kept,
            batch_size=BATCH,
            update_conflicts=True,
            unique_fields=["recipe", "image"],
            update_fields=["decision", "origin", "run", "decided_by", "updated_at"],
        )
    return len(kept) + len(cleared)


def recipe_gold(recipe: Recipe) -> dict[int, int]:
    """Image id → 1 (accepted) / 0 (rejected): the recipe's decisions as a run's gold."""
    accepted = RecipeDecision.Decision.ACCEPTED
    return {
        image_id: int(decision == accepted)
        for image_id, decision in recipe.decisions.values_list("image_id", "decision")
    }


@dataclass
class ImportReport:
    recorded: int = 0
    accepted: int = 0
    rejected: int = 0
    applied_to_run: int = 0  # rows of the latest run's grid that now show the decision
    errors: list[str] = field(default_factory=list)  # "line N: why", for rows not recorded


def _rows(text: str) -> Iterable[tuple[int, list[str]]]:
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if row and any(cell.strip() for cell in row):
            yield line, [cell.strip() for cell in row]


def import_decisions(recipe: Recipe, path: str | Path, *, user: Any = None) -> ImportReport:
    """Read `sha256,decision` rows (accept/reject; an optional header) and record them.

    Rows naming an unknown sha256 or decision are reported by line number and skipped; every
    other row is recorded, and shown on the recipe's latest run's grid as if clicked there.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from exc
    report = ImportReport()
    wanted: dict[str, tuple[int, str]] = {}
    for line, row in _rows(text):
        if line == 1 and [c.lower() for c in row[:2]] == ["sha256", "decision"]:
            continue
        if len(row) != 2:
            report.errors.append(f"line {line}: expected 2 columns sha256,decision, got {len(row)}")
            continue
        sha, word = row[0].lower(), row[1].lower()
        if word not in CSV_DECISIONS:
            report.errors.append(f"line {line}: decision {row[1]!r} is not accept or reject")
            continue
        wanted[sha] = (line, CSV_DECISIONS[word])  # a later row for the same image wins
    known: dict[str, int] = {}
    shas = list(wanted)
    for start in range(0, len(shas), BATCH):
        known.update(
            Image.objects.filter(sha256__in=shas[start : start + BATCH]).values_list("sha256", "pk")
        )
    decisions: dict[int, str] = {}
    for sha, (line, decision) in wanted.items():
        if sha not in known:
            report.errors.append(f"line {line}: no image with sha256 {sha[:64]!r}")
            continue
        decisions[known[sha]] = decision
    report.errors.sort(key=lambda e: int(e.split(":", 1)[0].split()[1]))
    latest = recipe.runs.order_by("-id").first()
    with transaction.atomic():
        report.recorded = record_decisions(
            recipe, decisions, origin=RecipeDecision.Origin.IMPORT, run=latest, user=user
        )
        if latest is not None:
            for decision in RecipeDecision.Decision.values:
                ids = [i for i, d in decisions.items() if d == decision]
                for start in range(0, len(ids), BATCH):
                    report.applied_to_run += RecipeScore.objects.filter(
                        run=latest, image_id__in=ids[start : start + BATCH]
                    ).update(decision=decision)
    report.accepted = sum(d == RecipeDecision.Decision.ACCEPTED for d in decisions.values())
    report.rejected = len(decisions) - report.accepted
    return report


def export_decisions(recipe: Recipe, out: io.TextIOBase | Any) -> int:
    """Write the recipe's decisions as `sha256,decision` CSV (with a header); returns rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sha256", "decision"])
    rows = (
        recipe.decisions.order_by("image__sha256")
        .values_list("image__sha256", "decision")
        .iterator(chunk_size=BATCH)
    )
    count = 0
    for sha, decision in rows:
        writer.writerow([sha, CSV_WORDS[decision]])
        count += 1
    return count
