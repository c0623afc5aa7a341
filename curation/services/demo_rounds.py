"""DEMO ONLY: rating rounds for a generation batch, annotated by a script.

`demo_annotate`'s scripted annotators answer from the toy CLIP when the evaluation CLIP is the
toy world's (curation.services.demo_judges: aligned / sticker-like as the toy CLIP sees it, each
annotator with their own seeded noise and slips). Without it they write PSEUDO-RATINGS:
deterministic numbers derived from hashes of the rated images' content (sha256) and the
annotator's username, made to look like several people rating with some agreement, and the
summary says so. Either way never from database ids: a run whose jobs were retried or resumed
(the chaos test) allocates other ids, yet must rate the same images the same way as an
undisturbed run. They are demo data, not human judgements, and no test uses them as ground
truth. They go through the real path nonetheless: each demo annotator's own Label Studio
account creates them through the API (as the browser would), the platform receives them by
webhook and/or reconcile, then curates the round.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from curation.labelstudio import results
from curation.labelstudio.client import LabelStudioClient
from curation.models import AnnotationRound, DatasetVersion, Image, LabelTask
from curation.services.aggregation import compute_round_quality
from curation.services.annotators import annotator_client, labelstudio_client, sync_annotators
from curation.services.curation import curate_round
from curation.services.rounds.create import create_round
from curation.services.rounds.push import push_round
from curation.services.sync import reconcile_round

Kind = AnnotationRound.Kind


def _demo_exemplars(limit: int = 3) -> list[Image]:
    """A few images of the newest frozen domain version, if any, as style exemplars."""
    version = (
        DatasetVersion.objects.filter(state=DatasetVersion.State.FROZEN, dataset__kind="domain")
        .order_by("-frozen_at")
        .first()
    )
    if version is None:
        return []
    return [item.image for item in version.items.select_related("image").order_by("pk")[:limit]]


def demo_rating_rounds(
    generation_batch: Any, user: Any, *, overlap: int = 3
) -> list[AnnotationRound]:
    """Create an alignment and a style round over the batch and push both to Label Studio."""
    client = labelstudio_client()
    sync_annotators()
    rounds = [
        create_round(
            name=f"{generation_batch.name} · alignment",
            kind=Kind.ALIGNMENT,
            generation_batch=generation_batch,
            overlap=overlap,
            gold_rate=0.0,
            user=user,
        ),
        create_round(
            name=f"{generation_batch.name} · style",
            kind=Kind.STYLE,
            generation_batch=generation_batch,
            overlap=overlap,
            gold_rate=0.0,
            style_exemplars=_demo_exemplars(),
            user=user,
        ),
    ]
    for round_ in rounds:
        push_round(round_, client=client)
        round_.refresh_from_db()
    return rounds


def _unit(*parts: Any) -> float:
    """A deterministic pseudo-random number in [0, 1) from the given parts."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _quality(sha256: str) -> float:
    # Skewed towards decent images so a small demo batch still curates some rows.
    return 0.3 + 0.7 * _unit("image", sha256)


def task_images(task: LabelTask) -> tuple[str, ...]:
    """The content sha256 of what the task shows: (image,) or, for A/B, (left, right)."""
    if task.image_id is not None:
        return (task.image.sha256,)
    shown = [g.image.sha256 for g in (task.generation, task.other_generation) if g is not None]
    if not shown:
        raise ValueError(f"task {task.key}: shows no image to rate")
    return tuple(shown)


def pseudo_result(
    kind: str, images: Sequence[str], annotator: str, gold_answer: dict | None = None
):
    """DEMO DATA: a result that depends on the images shown (shared "quality", by content) plus
    the annotator's noise. `images`: sha256 of each image in display order (`task_images`)."""
    if kind == Kind.PAIRWISE:
        preferred = gold_answer.get("preferred") if gold_answer else None
        if preferred is None:
            # The better image is chosen by content; the side follows where it was drawn, so
            # the same two images get the same vote whichever side each landed on.
            first, second = sorted(images)
            noise = _unit("annotator", first, second, annotator) - 0.5
            better = first if _quality(first) + 0.35 * noise >= _quality(second) else second
            preferred = "left" if better == images[0] else "right"
        return results.pairwise_result(preferred)
    (sha256,) = images
    noise = _unit("annotator", sha256, annotator) - 0.5
    score = min(max(_quality(sha256) + 0.35 * noise, 0.0), 0.999)
    stars = 1 + int(score * 5)
    if kind == Kind.ALIGNMENT:
        aligned = (
            gold_answer["aligned"] if gold_answer and "aligned" in gold_answer else score >= 0.3
        )
        return results.alignment_result(bool(aligned), stars)
    passed = gold_answer["passed"] if gold_answer and "passed" in gold_answer else score >= 0.35
    return results.style_result(bool(passed), stars)


TOY_CLIP = "toy CLIP"
CONTENT_HASH = "content hash (pseudo-ratings: EVAL_CLIP_WEIGHTS is not the toy world's CLIP)"


def demo_annotate(
    round_: AnnotationRound,
    annotators: Sequence[Any],
    *,
    user: Any = None,
    curate: bool = True,
    client: LabelStudioClient | None = None,
    judge: Any = "settings",
) -> dict[str, Any]:
    """DEMO ONLY: each annotator rates every pushed task once (skipping what they already rated),
    then the round is reconciled, scored and (optionally) curated. `judge`: a
    `training.engine.toy_world.judge.ToyJudge`, None for pseudo-ratings, or "settings" (the toy
    CLIP when EVAL_CLIP_WEIGHTS is the toy world's, else pseudo-ratings)."""
    from curation.services.demo_judges import (
        ToySignalCache,
        task_shown,
        toy_judge_from_settings,
        toy_result,
    )

    if judge == "settings":
        judge = toy_judge_from_settings()
    client = client or labelstudio_client()
    sync_annotators()
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    reconcile_round(round_, client=client)
    tasks = list(
        round_.tasks.filter(labelstudio_task_id__isnull=False)
        .select_related(
            "image",
            "generation__image",
            "generation__prompt",
            "other_generation__image",
            "other_generation__prompt",
        )
        .order_by("pk")
    )
    signals = None
    if judge is not None:
        signals = ToySignalCache(judge)
        signals.prefetch(tasks)
    created = 0
    for annotator in annotators:
        as_annotator = annotator_client(annotator, client)
        done = set(
            round_.tasks.filter(
                annotations__annotator=annotator, annotations__deleted=False
            ).values_list("pk", flat=True)
        )
        for task in tasks:
            if task.pk in done:
                continue
            gold = task.gold_answer if task.is_gold else None
            if signals is not None:
                result = toy_result(
                    round_.kind, task_shown(task), signals, annotator.get_username(), gold
                )
            else:
                result = pseudo_result(
                    round_.kind, task_images(task), annotator.get_username(), gold
                )
            as_annotator.sdk.annotations.create(id=task.labelstudio_task_id, result=result)
            created += 1
    summary: dict[str, Any] = {
        "round": round_.pk,
        "annotations_created": created,
        "rated_by": TOY_CLIP if signals is not None else CONTENT_HASH,
    }
    summary["reconcile"] = reconcile_round(round_, client=client)
    summary["quality"] = compute_round_quality(round_)
    if curate:
        try:
            version = curate_round(round_, user)
        except ValueError as exc:  # e.g. no task passes the rules: say so, keep the round
            summary["curate_error"] = str(exc)
        else:
            summary["dataset_version"] = version.pk
            summary["rows"] = version.row_count
    return summary
