"""Closing a round (a snapshot of what counts) and curating it into a frozen DatasetVersion.

Closing records which annotation versions exist, who counted, who was excluded and why, and the
gold policy and curation rules in force. Quality and curation of a closed round read only that
snapshot, so re-curating it after staff changes or late Label Studio edits gives the same rows,
hence a byte-identical manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from curation.models import AnnotationRound, Dataset, DatasetVersion, Judgement
from curation.services.aggregation import compute_round_quality, rules_for
from curation.services.annotation_store import lock_round
from curation.services.versions import add_items, create_draft_version, freeze_version

Kind = AnnotationRound.Kind
State = AnnotationRound.State

DATASET_NAMES = {
    Kind.ALIGNMENT: ("Alignment (annotation rounds)", Dataset.Kind.ALIGNMENT),
    Kind.STYLE: ("Style (annotation rounds)", Dataset.Kind.STYLE),
    Kind.PAIRWISE: ("Style preferences (pairwise rounds)", Dataset.Kind.STYLE),
}


def close_round(round_: AnnotationRound) -> AnnotationRound:
    """Stop treating the round as active (scheduled reconciles skip it) and snapshot it."""
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    if round_.state not in (State.PUSHED, State.ANNOTATING):
        raise ValueError(
            f"round {round_.pk} is {round_.state}; only pushed or annotating rounds close"
        )
    quality = compute_round_quality(round_)
    snapshot = {
        "closed_at": timezone.now().isoformat(),
        "annotation_versions": quality["annotation_versions"],
        "counted": quality["counted_annotators"],
        "excluded": quality["excluded"],
        "gold_policy": quality["gold_policy"],
        "rules": quality["rules"],
    }
    with transaction.atomic():
        lock_round(round_.pk)
        # Its media links end with it (curation.media checks the state and the generation).
        AnnotationRound.objects.filter(pk=round_.pk).update(
            state=State.CLOSED,
            closing_snapshot=snapshot,
            media_generation=F("media_generation") + 1,
        )
    round_.refresh_from_db()
    return round_


def _passes(kind: str, value: dict[str, Any], rules: dict[str, Any]) -> bool:
    if value.get("votes", 0) < int(rules.get("min_votes", 1)):
        return False
    if kind == Kind.PAIRWISE:
        return value.get("preferred") is not None and value["win_fraction"] > float(
            rules["min_win_fraction"]
        )
    key = "aligned" if kind == Kind.ALIGNMENT else "passed"
    if kind == Kind.ALIGNMENT and rules.get("min_votes_for") is not None:
        verdict = value[f"{key}_votes"] >= int(rules["min_votes_for"])
    elif rules.get("method") == "dawid_skene":
        verdict = value.get(f"{key}_dawid_skene") is True
    else:
        verdict = value.get(key) is True
    if kind == Kind.ALIGNMENT:
        return verdict
    if rules.get("require_pass", True) and not verdict:
        return False
    statistic = value.get(
        "rating_median" if rules.get("rating_statistic") == "median" else "rating_mean"
    )
    return statistic is not None and statistic >= float(rules["min_rating"])


def curate_round(
    round_: AnnotationRound,
    user: Any = None,
    *,
    rules: dict[str, Any] | None = None,
    dataset: Dataset | None = None,
    parent: DatasetVersion | None = None,
    on_frozen: Callable[[DatasetVersion], None] | None = None,
) -> DatasetVersion:
    """Freeze a DatasetVersion from the round's judgements under explicit rules; round → curated.

    Alignment rows: images judged aligned, caption = prompt. Style rows: passed and rating at or
    above `min_rating`. Pairwise rows: the preferred image where its win fraction beats
    `min_win_fraction`. Gold tasks are never rows. The rules travel in the version's lineage.
    A closed (or already curated) round is curated from its closing snapshot only.
    `on_frozen(version)` runs inside the transaction that freezes the version: a job records
    it there, so the version and that record commit together (raising rolls both back).
    """
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    if round_.state not in (State.PUSHED, State.ANNOTATING, State.CLOSED, State.CURATED):
        raise ValueError(f"round {round_.pk} is {round_.state}; only annotated rounds are curated")
    kind = Kind(round_.kind)
    used_rules = rules_for(round_, rules)
    if rules and not round_.closing_snapshot:
        AnnotationRound.objects.filter(pk=round_.pk).update(
            curation_rules={**(round_.curation_rules or {}), **rules}
        )
        round_.refresh_from_db()
    quality = compute_round_quality(round_)
    name, dataset_kind = DATASET_NAMES[kind]
    if dataset is None:
        dataset, _ = Dataset.objects.get_or_create(
            name=name,
            defaults={"kind": dataset_kind, "description": "Curated from annotation rounds."},
        )
    rows: list[dict[str, Any]] = []
    generations: list[int] = []
    judgements = Judgement.objects.filter(task__round=round_, task__is_gold=False).select_related(
        "task__generation__image", "task__other_generation__image", "task__image"
    )
    for judgement in judgements.order_by("task_id"):
        task = judgement.task
        if not _passes(kind, judgement.value, used_rules):
            continue
        if kind == Kind.PAIRWISE:
            generation = (
                task.generation if judgement.value["preferred"] == "left" else task.other_generation
            )
            image, label = generation.image, "preferred"
        else:
            generation = task.generation
            image = generation.image if generation is not None else task.image
            label = "aligned" if kind == Kind.ALIGNMENT else "style"
        if image is None:
            continue
        caption = generation.prompt_text if generation is not None else task.prompt
        if generation is not None:
            generations.append(generation.pk)
        rows.append({"image": image, "caption": caption, "label": label, "weight": 1.0})
    lineage = {
        "round": round_.pk,
        "round_name": round_.name,
        "round_kind": kind.value,
        "labelstudio_project_id": round_.labelstudio_project_id,
        "generation_batch": round_.generation_batch_id,
        "other_generation_batch": round_.other_generation_batch_id,
        "generations": generations,
        "tasks": quality["tasks"],
        "annotations": quality["counted_annotations"],
        "annotations_used": quality["used_annotations"],
        "annotators": quality["annotators"],
        "flagged_annotators": quality["flagged_annotators"],
        "excluded": quality["excluded"],
        "gold_policy": quality["gold_policy"],
        "from_closing_snapshot": quality["from_closing_snapshot"],
        "agreement": quality["agreement"],
        "rules": used_rules,
    }
    with transaction.atomic():
        lock_round(round_.pk)
        version = create_draft_version(
            dataset,
            parent=parent,
            reason=f"curated from round {round_.pk} ({round_.name})",
            lineage=lineage,
        )
        add_items(version, rows)
        if not version.items.exists() and not rows:
            raise ValueError(
                f"round {round_.pk}: no task passes the rules {used_rules}; nothing to freeze"
            )
        version = freeze_version(version, user=user, reason=version.reason)
        AnnotationRound.objects.filter(pk=round_.pk).update(
            result_version=version, state=State.CURATED
        )
        if on_frozen is not None:
            on_frozen(version)
    return version
