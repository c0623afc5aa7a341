"""DEMO ONLY: rating rounds for a generation batch, annotated by a script.

`demo_annotate` writes PSEUDO-RATINGS: deterministic numbers derived from hashes of ids, made to
look like several people rating with some agreement. They are demo data, not judgements of the
images, and no test uses them as ground truth. They go through the real path nonetheless: each
demo annotator's own Label Studio account creates them through the API (as the browser would),
the platform receives them by webhook and/or reconcile, then curates the round.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from curation.labelstudio import results
from curation.labelstudio.client import LabelStudioClient
from curation.models import AnnotationRound, DatasetVersion, Image
from curation.services.aggregation import compute_round_quality
from curation.services.annotators import annotator_client, labelstudio_client, sync_annotators
from curation.services.curation import curate_round
from curation.services.rounds import create_round, push_round
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
    """A deterministic pseudo-random number in [0, 1) from the given ids."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pseudo_result(kind: str, task_key: str, annotator_id: int, gold_answer: dict | None = None):
    """DEMO DATA: a result that depends on the task (shared "quality") plus annotator noise."""
    # Skewed towards decent images so a small demo batch still curates some rows.
    quality = 0.3 + 0.7 * _unit("task", task_key)
    noise = _unit("annotator", task_key, annotator_id) - 0.5
    score = min(max(quality + 0.35 * noise, 0.0), 0.999)
    stars = 1 + int(score * 5)
    if kind == Kind.PAIRWISE:
        preferred = gold_answer.get("preferred") if gold_answer else None
        return results.pairwise_result(preferred or ("left" if score < 0.5 else "right"))
    if kind == Kind.ALIGNMENT:
        aligned = (
            gold_answer["aligned"] if gold_answer and "aligned" in gold_answer else score >= 0.3
        )
        return results.alignment_result(bool(aligned), stars)
    passed = gold_answer["passed"] if gold_answer and "passed" in gold_answer else score >= 0.35
    return results.style_result(bool(passed), stars)


def demo_annotate(
    round_: AnnotationRound,
    annotators: Sequence[Any],
    *,
    user: Any = None,
    curate: bool = True,
    client: LabelStudioClient | None = None,
) -> dict[str, Any]:
    """DEMO ONLY: each annotator rates every pushed task once (skipping what they already rated)
    with pseudo-ratings, then the round is reconciled, scored and (optionally) curated."""
    client = client or labelstudio_client()
    sync_annotators()
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    reconcile_round(round_, client=client)
    tasks = list(round_.tasks.filter(labelstudio_task_id__isnull=False).order_by("pk"))
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
            result = pseudo_result(
                round_.kind, task.key, annotator.pk, task.gold_answer if task.is_gold else None
            )
            as_annotator.sdk.annotations.create(id=task.labelstudio_task_id, result=result)
            created += 1
    summary: dict[str, Any] = {"round": round_.pk, "annotations_created": created}
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
