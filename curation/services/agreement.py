"""Agreement between annotators: Krippendorff's alpha, percent agreement, and each annotator's
agreement with the others' consensus (their own vote never part of it)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import krippendorff
import numpy as np


@dataclass(frozen=True)
class Vote:
    """One counted annotation, reduced to what quality checks read."""

    task_id: int
    is_gold: bool
    worker: int  # Label Studio user id
    aligned: bool | None
    passed: bool | None
    rating: int | None
    preferred: str
    issues: list[str]


def _numeric(name: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    if name == "preferred":
        return 0.0 if value == "left" else 1.0
    return float(value)


def agreement(votes: list[Vote], name: str, level: str) -> dict[str, Any]:
    """Krippendorff's alpha (None when undefined, e.g. one value only) and percent agreement."""
    by_task: dict[int, dict[int, float]] = defaultdict(dict)
    for vote in votes:
        value = _numeric(name, getattr(vote, name))
        if value is not None:
            by_task[vote.task_id][vote.worker] = value
    units = {t: v for t, v in by_task.items() if len(v) >= 2}
    result: dict[str, Any] = {"level": level, "units": len(units), "alpha": None, "percent": None}
    if not units:
        result["note"] = "no task has two or more ratings"
        return result
    workers = sorted({w for values in units.values() for w in values})
    tasks = sorted(units)
    matrix = np.full((len(workers), len(tasks)), np.nan)
    for j, task in enumerate(tasks):
        for worker, value in units[task].items():
            matrix[workers.index(worker), j] = value
    try:
        result["alpha"] = float(
            krippendorff.alpha(reliability_data=matrix, level_of_measurement=level)
        )
    except ValueError as exc:  # one value in the whole domain: alpha is undefined
        result["note"] = str(exc)
    pair_scores = []
    for values in units.values():
        items = list(values.values())
        pairs = [(a, b) for i, a in enumerate(items) for b in items[i + 1 :]]
        pair_scores.append(sum(a == b for a, b in pairs) / len(pairs))
    result["percent"] = float(np.mean(pair_scores))
    return result


def consensus_agreement(votes: list[Vote], name: str) -> dict[int, float | None]:
    """Per annotator: on regular tasks, how often their label equals the majority of the
    *other* annotators' labels on that task (ties and tasks nobody else rated are skipped)."""
    by_task: dict[int, list[Vote]] = defaultdict(list)
    for vote in votes:
        if not vote.is_gold and getattr(vote, name) not in (None, ""):
            by_task[vote.task_id].append(vote)
    hits: dict[int, list[bool]] = defaultdict(list)
    for task_votes in by_task.values():
        for vote in task_votes:
            others = Counter(getattr(v, name) for v in task_votes if v.worker != vote.worker)
            if not others:
                continue
            ranked = others.most_common()
            if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
                continue
            hits[vote.worker].append(getattr(vote, name) == ranked[0][0])
    workers = {v.worker for v in votes}
    return {w: (sum(hits[w]) / len(hits[w]) if hits[w] else None) for w in workers}
