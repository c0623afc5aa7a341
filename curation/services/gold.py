"""Gold: the pool of tasks with known answers, mixing them into rounds, and judging annotators.

An annotator is judged only after answering `min_gold_answered` gold tasks, and excluded only
when the upper bound of the Wilson interval on their gold accuracy (at `gold_confidence`) is
below the round's threshold: one miss among few answers excludes nobody.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from django.db import transaction

from curation.labelstudio import configs
from curation.models import AnnotationRound, GoldItem, LabelTask
from curation.services.agreement import Vote

Kind = AnnotationRound.Kind

# What a gold answer may say, per round kind (compared with the annotation's parsed fields).
GOLD_KEYS = {
    Kind.ALIGNMENT: {"aligned": bool, "rating": int},
    Kind.STYLE: {"passed": bool, "rating": int},
    Kind.PAIRWISE: {"preferred": str},
}


def validate_gold(kind: str, gold: Sequence[GoldItem]) -> None:
    """Raise ValueError naming every bad gold item (index and field) before anything is created."""
    allowed = GOLD_KEYS[Kind(kind)]
    problems: list[str] = []
    for index, item in enumerate(gold):
        where = f"gold[{index}]"
        if item.kind and item.kind != kind:
            problems.append(f"{where}.kind: a {item.kind} item cannot be gold in a {kind} round")
            continue
        if not isinstance(item.answer, dict) or not item.answer:
            problems.append(f"{where}.answer: must be a non-empty object")
            continue
        for key, value in item.answer.items():
            expected = allowed.get(key)
            if expected is None:
                problems.append(f"{where}.answer.{key}: not a {kind} answer ({sorted(allowed)})")
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                problems.append(
                    f"{where}.answer.{key}: expected {expected.__name__}, got {value!r}"
                )
        if item.answer.get("preferred") not in (None, configs.LEFT, configs.RIGHT):
            problems.append(f"{where}.answer.preferred: must be 'left' or 'right'")
        if kind == Kind.PAIRWISE:
            if item.generation_id is None or item.other_generation_id is None:
                problems.append(
                    f"{where}: a pairwise gold task needs generation and other_generation"
                )
        elif item.generation_id is None and item.image_id is None:
            problems.append(f"{where}: needs a generation or an image")
    if problems:
        raise ValueError("invalid gold set: " + "; ".join(problems))


def gold_pool(kind: str) -> list[GoldItem]:
    """The active gold items of a kind, as rounds draw from them by default."""
    return list(
        GoldItem.objects.filter(kind=kind, active=True)
        .select_related("image", "generation", "other_generation")
        .order_by("pk")
    )


def _answer_from_judgement(kind: str, value: dict[str, Any]) -> dict[str, Any]:
    if kind == Kind.ALIGNMENT and isinstance(value.get("aligned"), bool):
        return {"aligned": value["aligned"]}
    if kind == Kind.STYLE and isinstance(value.get("passed"), bool):
        return {"passed": value["passed"]}
    if kind == Kind.PAIRWISE and value.get("preferred") in (configs.LEFT, configs.RIGHT):
        return {"preferred": value["preferred"]}
    return {}


def gold_from_round(
    source: AnnotationRound, *, min_confidence: float = 1.0, min_votes: int = 2
) -> list[GoldItem]:
    """Unsaved gold items from an earlier round: its gold tasks plus its confident verdicts.

    "Confident" defaults to unanimous among at least two counted ratings.
    """
    items: list[GoldItem] = []
    for task in source.tasks.select_related("generation", "other_generation", "image"):
        if task.is_gold:
            answer = dict(task.gold_answer)
        else:
            judgement = getattr(task, "judgement", None)
            if (
                judgement is None
                or judgement.n_ratings < min_votes
                or judgement.confidence < min_confidence
            ):
                continue
            answer = _answer_from_judgement(source.kind, judgement.value)
            if not answer:
                continue
        items.append(
            GoldItem(
                kind=source.kind,
                answer=answer,
                image=task.image,
                prompt=task.prompt,
                generation=task.generation,
                other_generation=task.other_generation,
                source_task=task,
            )
        )
    return items


@transaction.atomic
def add_gold_from_round(
    source: AnnotationRound, *, user: Any = None, min_confidence: float = 1.0, min_votes: int = 2
) -> list[GoldItem]:
    """The data lead's one action: a round's high-agreement judgements into the gold pool
    (items already in the pool for the same content are not added twice)."""
    existing = {g.identity for g in GoldItem.objects.filter(kind=source.kind)}
    added = []
    for item in gold_from_round(source, min_confidence=min_confidence, min_votes=min_votes):
        if item.identity in existing:
            continue
        item.created_by = user if getattr(user, "pk", None) else None
        item.save()
        existing.add(item.identity)
        added.append(item)
    return added


def pick_gold(
    gold: Sequence[GoldItem], regular_count: int, rate: float, seed: str
) -> list[tuple[int, GoldItem]]:
    """(position among the regular tasks, item): gold spread evenly with jitter, deterministic
    per round; `rate` gold tasks per regular one, at most one use of each item."""
    if not regular_count or not gold or rate <= 0:
        return []
    count = min(len(gold), max(1, round(rate * regular_count)))
    rng = random.Random(seed)
    chosen = rng.sample(list(gold), count)
    stride = regular_count / count
    positions = sorted(int(i * stride + rng.random() * stride) for i in range(count))
    return list(zip(positions, chosen, strict=True))


# -- judging annotators --------------------------------------------------------------------


def wilson_interval(correct: int, answered: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0, 1) when nothing was answered."""
    if answered == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = correct / answered
    denominator = 1 + z * z / answered
    centre = (p + z * z / (2 * answered)) / denominator
    half = z * math.sqrt(p * (1 - p) / answered + z * z / (4 * answered * answered)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def gold_correct(vote: Vote, answer: dict[str, Any], tolerance: int) -> bool:
    for key, expected in answer.items():
        if key == "rating":
            if vote.rating is None or abs(vote.rating - int(expected)) > tolerance:
                return False
        elif getattr(vote, key, None) != expected:
            return False
    return True


@dataclass(frozen=True)
class GoldPolicy:
    threshold: float
    min_answered: int
    confidence: float
    rating_tolerance: int = 1

    @classmethod
    def of(cls, round_: AnnotationRound, rating_tolerance: int = 1) -> GoldPolicy:
        return cls(
            threshold=round_.gold_accuracy_threshold,
            min_answered=round_.min_gold_answered,
            confidence=round_.gold_confidence,
            rating_tolerance=rating_tolerance,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "gold_accuracy_threshold": self.threshold,
            "min_gold_answered": self.min_answered,
            "gold_confidence": self.confidence,
            "rating_tolerance": self.rating_tolerance,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GoldPolicy:
        return cls(
            threshold=float(values["gold_accuracy_threshold"]),
            min_answered=int(values["min_gold_answered"]),
            confidence=float(values["gold_confidence"]),
            rating_tolerance=int(values["rating_tolerance"]),
        )


@dataclass(frozen=True)
class GoldScore:
    answered: int
    correct: int
    accuracy: float | None
    low: float | None
    high: float | None
    excluded_reason: str  # empty when the annotator counts


def score_gold(
    votes: Iterable[Vote], tasks: dict[int, LabelTask], policy: GoldPolicy
) -> dict[int, GoldScore]:
    """Gold accuracy with its interval per annotator, and why gold excludes them (if it does)."""
    answered: dict[int, int] = {}
    correct: dict[int, int] = {}
    for vote in votes:
        answered.setdefault(vote.worker, 0)
        correct.setdefault(vote.worker, 0)
        task = tasks[vote.task_id]
        if task.is_gold and task.gold_answer:
            answered[vote.worker] += 1
            correct[vote.worker] += gold_correct(vote, task.gold_answer, policy.rating_tolerance)
    scores = {}
    for worker, n in answered.items():
        k = correct[worker]
        if n == 0:
            scores[worker] = GoldScore(0, 0, None, None, None, "")
            continue
        low, high = wilson_interval(k, n, policy.confidence)
        reason = ""
        if n >= policy.min_answered and high < policy.threshold:
            reason = (
                f"gold accuracy {k}/{n} = {k / n:.2f}, {policy.confidence:.0%} interval "
                f"[{low:.2f}, {high:.2f}] lies below the threshold {policy.threshold:.2f}"
            )
        scores[worker] = GoldScore(n, k, k / n, low, high, reason)
    return scores
