"""Creating a round: its LabelTasks in the order annotators see them, gold spread through them,
A/B sides drawn by a fair coin, members and curation rules recorded."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from curation.labelstudio import configs
from curation.models import (
    AnnotationRound,
    GoldItem,
    Image,
    LabelTask,
    RoundNotice,
)
from curation.services.annotators import annotator_users
from curation.services.gold import gold_pool, pick_gold, validate_gold

Kind = AnnotationRound.Kind


def _task_key(*parts: Any) -> str:
    """Opaque and stable: annotators can read task data, so a key must not say "gold"."""
    return "t" + hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@dataclass
class _Planned:
    key: str
    prompt: str
    generation: Any = None
    other_generation: Any = None
    image: Image | None = None
    is_gold: bool = False
    gold_answer: dict[str, Any] = field(default_factory=dict)


def _mix_gold(
    regular: list[_Planned], gold: Sequence[GoldItem], rate: float, seed: str
) -> list[_Planned]:
    """Spread gold tasks evenly (with jitter) through the regular ones; deterministic per round."""
    planned = list(regular)
    for offset, (position, item) in enumerate(pick_gold(gold, len(regular), rate, seed)):
        planned.insert(
            position + offset,
            _Planned(
                key=_task_key("gold", item.identity),
                prompt=item.prompt
                or (item.generation.prompt_text if item.generation is not None else ""),
                generation=item.generation,
                other_generation=item.other_generation,
                image=item.image,
                is_gold=True,
                gold_answer=dict(item.answer),
            ),
        )
    return planned


def _randomise_sides(planned: _Planned) -> None:
    """A/B blinding: a fair coin per task (not derivable from ids) decides which generation is
    on the left; the LabelTask records it, task data never does. Gold answers follow."""
    if secrets.randbelow(2):
        planned.generation, planned.other_generation = (
            planned.other_generation,
            planned.generation,
        )
        side = planned.gold_answer.get("preferred")
        if side in (configs.LEFT, configs.RIGHT):
            planned.gold_answer = {
                **planned.gold_answer,
                "preferred": configs.RIGHT if side == configs.LEFT else configs.LEFT,
            }


@transaction.atomic
def _create(
    *,
    name: str,
    kind: str,
    planned: list[_Planned],
    gold: Sequence[GoldItem] | None,
    overlap: int,
    gold_rate: float,
    gold_accuracy_threshold: float,
    style_exemplars: Iterable[Image],
    curation_rules: dict[str, Any] | None,
    user: Any,
    min_gold_answered: int | None = None,
    gold_confidence: float | None = None,
    members: Iterable[Any] | None = None,
    generation_batch: Any = None,
    other_generation_batch: Any = None,
) -> AnnotationRound:
    if overlap < 1:
        raise ValueError(f"overlap: must be at least 1, got {overlap}")
    if not 0 <= gold_rate <= 1:
        raise ValueError(f"gold_rate: must be between 0 and 1, got {gold_rate}")
    if not planned:
        raise ValueError(f"round {name!r}: nothing to annotate (no generations or images)")
    gold = gold_pool(kind) if gold is None else list(gold)
    validate_gold(kind, gold)
    policy: dict[str, Any] = {}
    if min_gold_answered is not None:
        policy["min_gold_answered"] = min_gold_answered
    if gold_confidence is not None:
        if not 0 < gold_confidence < 1:
            raise ValueError(f"gold_confidence: must be between 0 and 1, got {gold_confidence}")
        policy["gold_confidence"] = gold_confidence
    round_ = AnnotationRound.objects.create(
        name=name,
        kind=kind,
        generation_batch=generation_batch,
        other_generation_batch=other_generation_batch,
        overlap=overlap,
        gold_rate=gold_rate,
        gold_accuracy_threshold=gold_accuracy_threshold,
        curation_rules=dict(curation_rules or {}),
        created_by=user if getattr(user, "pk", None) else None,
        **policy,
    )
    exemplars = list(style_exemplars)
    if exemplars:
        round_.style_exemplars.set(exemplars)
    round_.members.set(list(annotator_users()) if members is None else list(members))
    ordered = _mix_gold(planned, gold, gold_rate, seed=f"round-{round_.pk}")
    if gold_rate > 0 and not gold:
        # Not an error (an automated retrain round must still start), but never silent.
        RoundNotice.objects.create(
            round=round_,
            kind=RoundNotice.Kind.NO_GOLD,
            message=(
                f"gold_rate is {gold_rate} but the {kind} gold pool is empty: this round has no "
                "gold tasks, so gold checks exclude nobody. Mark gold items in the admin."
            ),
        )
    if kind == Kind.PAIRWISE:
        for p in ordered:
            _randomise_sides(p)
    LabelTask.objects.bulk_create(
        LabelTask(
            round=round_,
            key=p.key,
            prompt=p.prompt,
            generation=p.generation,
            other_generation=p.other_generation,
            image=p.image,
            is_gold=p.is_gold,
            gold_answer=p.gold_answer,
        )
        for p in ordered
    )
    return round_


def create_round(
    *,
    name: str,
    kind: str,
    generation_batch: Any = None,
    other_generation_batch: Any = None,
    images: QuerySet | Iterable[Image] | None = None,
    overlap: int = 3,
    gold: Sequence[GoldItem] | None = None,
    gold_rate: float = 0.1,
    gold_accuracy_threshold: float = 0.7,
    style_exemplars: Iterable[Image] = (),
    curation_rules: dict[str, Any] | None = None,
    min_gold_answered: int | None = None,
    gold_confidence: float | None = None,
    members: Iterable[Any] | None = None,
    user: Any = None,
) -> AnnotationRound:
    """A round over a GenerationBatch's generations or any images, with its tasks and gold.

    For plain images the prompt shown is the image's caption. A pairwise round compares
    `generation_batch` with `other_generation_batch`. `members` are the annotators who see the
    round (default: every current annotator). Gold tasks come from `gold` or, by default,
    the kind's gold pool, `gold_rate` of them per regular task; every way of making a round
    (admin, API, retrain rounds) comes here.
    """
    if kind == Kind.PAIRWISE:
        if generation_batch is None or other_generation_batch is None or images is not None:
            raise ValueError("a pairwise round needs generation_batch and other_generation_batch")
        return create_pairwise_round(
            generation_batch,
            other_generation_batch,
            name=name,
            overlap=overlap,
            gold=gold,
            gold_rate=gold_rate,
            gold_accuracy_threshold=gold_accuracy_threshold,
            curation_rules=curation_rules,
            min_gold_answered=min_gold_answered,
            gold_confidence=gold_confidence,
            members=members,
            user=user,
        )
    if kind not in (Kind.ALIGNMENT, Kind.STYLE):
        raise ValueError(f"kind: {kind!r} is not 'alignment', 'style' or 'pairwise'")
    if other_generation_batch is not None:
        raise ValueError("other_generation_batch: only pairwise rounds compare two batches")
    if (generation_batch is None) == (images is None):
        raise ValueError("give exactly one of generation_batch or images")
    if generation_batch is not None:
        planned = [
            _Planned(
                key=_task_key("generation", g.pk), prompt=g.prompt_text, generation=g, image=g.image
            )
            for g in generation_batch.generations.select_related("image").order_by("pk")
        ]
    else:
        planned = [
            _Planned(key=_task_key("image", im.pk), prompt=im.caption, image=im) for im in images
        ]
    return _create(
        name=name,
        kind=kind,
        planned=planned,
        gold=gold,
        overlap=overlap,
        gold_rate=gold_rate,
        gold_accuracy_threshold=gold_accuracy_threshold,
        style_exemplars=style_exemplars,
        curation_rules=curation_rules,
        user=user,
        min_gold_answered=min_gold_answered,
        gold_confidence=gold_confidence,
        members=members,
        generation_batch=generation_batch,
    )


def create_pairwise_round(
    batch_a: Any,
    batch_b: Any,
    *,
    name: str | None = None,
    overlap: int = 3,
    gold: Sequence[GoldItem] | None = None,
    gold_rate: float = 0.0,
    gold_accuracy_threshold: float = 0.7,
    curation_rules: dict[str, Any] | None = None,
    min_gold_answered: int | None = None,
    gold_confidence: float | None = None,
    members: Iterable[Any] | None = None,
    user: Any = None,
) -> AnnotationRound:
    """A/B tasks pairing the two batches' generations of the same prompt and seed.

    Which batch shows on the left is decided per task by a fair coin, so position bias does not
    favour one checkpoint; only the platform's LabelTask records which side is which.
    """
    if batch_a.pk == batch_b.pk:
        raise ValueError("batch_b: must differ from batch_a")
    others = {(g.prompt_id, g.seed): g for g in batch_b.generations.select_related("image")}
    planned: list[_Planned] = []
    for generation in batch_a.generations.select_related("image").order_by("pk"):
        other = others.get((generation.prompt_id, generation.seed))
        if other is None:
            continue
        planned.append(
            _Planned(
                key=_task_key("pair", *sorted((generation.pk, other.pk))),
                prompt=generation.prompt_text,
                generation=generation,
                other_generation=other,
            )
        )
    if not planned:
        raise ValueError(
            f"batches {batch_a.pk} and {batch_b.pk} share no (prompt, seed): nothing to compare"
        )
    return _create(
        name=name or f"{batch_a} vs {batch_b}",
        kind=Kind.PAIRWISE,
        planned=planned,
        gold=gold,
        overlap=overlap,
        gold_rate=gold_rate,
        gold_accuracy_threshold=gold_accuracy_threshold,
        style_exemplars=(),
        curation_rules=curation_rules,
        user=user,
        min_gold_answered=min_gold_answered,
        gold_confidence=gold_confidence,
        members=members,
        generation_batch=batch_a,
        other_generation_batch=batch_b,
    )
