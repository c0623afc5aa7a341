"""Agreement, gold accuracy, aggregation into judgements, and curating a round into a version.

Order matters and is the same every time: (1) keep annotations that count (live, not skipped,
by an account the platform made for a current annotator); (2) score each annotator on gold tasks
and flag those below the round's threshold; (3) measure agreement; (4) aggregate the remaining
annotators' labels per task with crowd-kit; (5) curate by explicit, recorded rules.
"""

from __future__ import annotations

import contextlib
import statistics
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
from crowdkit.aggregation import BradleyTerry, DawidSkene, MajorityVote
from django.db import transaction
from django.utils import timezone

from curation.models import (
    Annotation,
    AnnotationRound,
    AnnotatorRoundStats,
    Dataset,
    DatasetVersion,
    Judgement,
    LabelTask,
)
from curation.services.annotators import counted_labelstudio_users
from curation.services.sync import lock_round
from curation.services.versions import add_items, create_draft_version, freeze_version

Kind = AnnotationRound.Kind
State = AnnotationRound.State

# (annotation field, Krippendorff level) measured per kind; the first is the one aggregated.
FIELDS = {
    Kind.ALIGNMENT: [("aligned", "nominal"), ("rating", "ordinal")],
    Kind.STYLE: [("passed", "nominal"), ("rating", "ordinal")],
    Kind.PAIRWISE: [("preferred", "nominal")],
}
DEFAULT_RULES: dict[str, dict[str, Any]] = {
    # min_votes_for: None means "a strict majority of the counted votes".
    Kind.ALIGNMENT: {"method": "majority", "min_votes_for": None, "min_votes": 1},
    Kind.STYLE: {
        "method": "majority",
        "require_pass": True,
        "min_rating": 4.0,
        "rating_statistic": "mean",
        "min_votes": 1,
    },
    Kind.PAIRWISE: {"min_win_fraction": 0.5, "min_votes": 1},
}
COMMON_RULES = {"min_gold_answered": 1, "rating_tolerance": 1}
DATASET_NAMES = {
    Kind.ALIGNMENT: ("Alignment (annotation rounds)", Dataset.Kind.ALIGNMENT),
    Kind.STYLE: ("Style (annotation rounds)", Dataset.Kind.STYLE),
    Kind.PAIRWISE: ("Style preferences (pairwise rounds)", Dataset.Kind.STYLE),
}


def rules_for(round_: AnnotationRound, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    rules = {**COMMON_RULES, **DEFAULT_RULES[Kind(round_.kind)], **(round_.curation_rules or {})}
    rules.update(overrides or {})
    if rules.get("method", "majority") not in ("majority", "dawid_skene"):
        raise ValueError(f"rules.method: {rules['method']!r} is not 'majority' or 'dawid_skene'")
    return rules


@dataclass(frozen=True)
class _Row:
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


def agreement(rows: list[_Row], name: str, level: str) -> dict[str, Any]:
    """Krippendorff's alpha (None when undefined, e.g. one value only) and percent agreement."""
    by_task: dict[int, dict[int, float]] = defaultdict(dict)
    for row in rows:
        value = _numeric(name, getattr(row, name))
        if value is not None:
            by_task[row.task_id][row.worker] = value
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


def _gold_correct(row: _Row, answer: dict[str, Any], tolerance: int) -> bool:
    for key, expected in answer.items():
        if key == "rating":
            if row.rating is None or abs(row.rating - int(expected)) > tolerance:
                return False
        elif getattr(row, key, None) != expected:
            return False
    return True


@contextlib.contextmanager
def _quiet_pandas() -> Iterator[None]:
    """crowd-kit 1.4.2 passes keywords pandas 3 deprecates (inplace, copy); results are unaffected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*The (inplace|copy) keyword.*")
        yield


def _majority(rows: list[_Row], name: str) -> tuple[pd.Series, pd.DataFrame]:
    frame = pd.DataFrame(
        [
            {"task": r.task_id, "worker": r.worker, "label": getattr(r, name)}
            for r in rows
            if getattr(r, name) not in (None, "")
        ],
        columns=["task", "worker", "label"],
    )
    if frame.empty:
        return pd.Series(dtype=object), frame
    with _quiet_pandas():
        return MajorityVote().fit_predict_proba(frame), frame


def _dawid_skene(frame: pd.DataFrame) -> pd.DataFrame | None:
    if frame.empty or frame["label"].nunique() < 2:
        return None
    with _quiet_pandas():
        return DawidSkene(n_iter=100).fit_predict_proba(frame)


def _winner(probas: pd.DataFrame | None, task_id: int) -> tuple[Any, float]:
    """Most probable label and its probability; (None, p) on an exact tie."""
    if probas is None or task_id not in probas.index:
        return None, 0.0
    row = probas.loc[task_id]
    best = float(row.max())
    winners = [label for label, p in row.items() if abs(float(p) - best) < 1e-9]
    if len(winners) != 1:
        return None, best
    label = winners[0]
    # numpy scalars are not JSON serialisable; judgements are stored as JSON.
    return (label.item() if hasattr(label, "item") else label), best


@transaction.atomic
def compute_round_quality(round_: AnnotationRound) -> dict[str, Any]:
    """Recompute annotator stats, agreement and judgements for a round; returns `round.quality`."""
    lock_round(round_.pk)
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    kind = Kind(round_.kind)
    rules = rules_for(round_)
    counted_users = counted_labelstudio_users()
    tasks = {t.pk: t for t in round_.tasks.select_related("generation", "other_generation")}
    live = Annotation.objects.filter(task__round=round_, deleted=False)
    all_rows: list[_Row] = []
    uncounted = Counter()
    skipped = 0
    for a in live.values(
        "task_id",
        "labelstudio_user_id",
        "aligned",
        "passed",
        "rating",
        "preferred",
        "issues",
        "was_cancelled",
        "annotator_email",
    ):
        if a["was_cancelled"]:
            skipped += 1
            continue
        if a["labelstudio_user_id"] not in counted_users:
            uncounted[a["labelstudio_user_id"]] += 1
            continue
        all_rows.append(
            _Row(
                task_id=a["task_id"],
                is_gold=tasks[a["task_id"]].is_gold,
                worker=a["labelstudio_user_id"],
                aligned=a["aligned"],
                passed=a["passed"],
                rating=a["rating"],
                preferred=a["preferred"],
                issues=a["issues"] or [],
            )
        )

    # Gold accuracy and flags.
    stats: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"annotations": 0, "gold_answered": 0, "gold_correct": 0}
    )
    for row in all_rows:
        s = stats[row.worker]
        s["annotations"] += 1
        task = tasks[row.task_id]
        if task.is_gold and task.gold_answer:
            s["gold_answered"] += 1
            s["gold_correct"] += _gold_correct(
                row, task.gold_answer, int(rules["rating_tolerance"])
            )
    flagged: set[int] = set()
    for worker, s in stats.items():
        s["gold_accuracy"] = s["gold_correct"] / s["gold_answered"] if s["gold_answered"] else None
        if (
            s["gold_answered"] >= int(rules["min_gold_answered"])
            and s["gold_accuracy"] is not None
            and s["gold_accuracy"] < round_.gold_accuracy_threshold
        ):
            flagged.add(worker)
    used = [r for r in all_rows if r.worker not in flagged]
    regular = [r for r in used if not r.is_gold]

    # Agreement: on what is aggregated, and on every counted annotator for comparison.
    fields = FIELDS[kind]
    agreement_used = {name: agreement(used, name, level) for name, level in fields}
    agreement_all = {name: agreement(all_rows, name, level) for name, level in fields}

    # Aggregation per regular task.
    primary = fields[0][0]
    mv, frame = _majority(regular, primary)
    ds = _dawid_skene(frame)
    by_task: dict[int, list[_Row]] = defaultdict(list)
    for row in regular:
        by_task[row.task_id].append(row)
    judgements: list[Judgement] = []
    for task_id, rows in sorted(by_task.items()):
        value = _aggregate_task(kind, tasks[task_id], rows, mv, ds)
        if value is None:
            continue
        method = rules.get("method", "majority") if kind != Kind.PAIRWISE else "win_count"
        confidence = value["p_dawid_skene"] if method == "dawid_skene" else value["p_majority"]
        judgements.append(
            Judgement(
                task_id=task_id,
                value=value,
                confidence=float(confidence or 0.0),
                n_ratings=value["votes"],
                method=method,
            )
        )
    Judgement.objects.filter(task__round=round_).delete()
    Judgement.objects.bulk_create(judgements, batch_size=1000)

    # Agreement of each annotator with the consensus of the others' majority vote.
    consensus: dict[int, list[bool]] = defaultdict(list)
    for row in all_rows:
        if row.is_gold:
            continue
        label, _ = _winner(mv if len(mv) else None, row.task_id)
        value = getattr(row, primary)
        if label is not None and value not in (None, ""):
            consensus[row.worker].append(value == label)

    emails = dict(
        Annotation.objects.filter(task__round=round_)
        .exclude(labelstudio_user_id__isnull=True)
        .values_list("labelstudio_user_id", "annotator_email")
    )
    AnnotatorRoundStats.objects.filter(round=round_).delete()
    stat_rows = [
        AnnotatorRoundStats(
            round=round_,
            labelstudio_user_id=worker,
            user_id=counted_users[worker][0],
            label=counted_users[worker][1],
            annotations=s["annotations"],
            gold_answered=s["gold_answered"],
            gold_correct=s["gold_correct"],
            gold_accuracy=s["gold_accuracy"],
            consensus_agreement=(
                sum(consensus[worker]) / len(consensus[worker]) if consensus[worker] else None
            ),
            counted=True,
            flagged=worker in flagged,
        )
        for worker, s in sorted(stats.items())
    ]
    stat_rows += [
        AnnotatorRoundStats(
            round=round_,
            labelstudio_user_id=worker,
            label=emails.get(worker, "") or f"labelstudio-user-{worker}",
            annotations=n,
            counted=False,
        )
        for worker, n in sorted(uncounted.items(), key=lambda kv: kv[0] or 0)
        if worker is not None
    ]
    AnnotatorRoundStats.objects.bulk_create(stat_rows)

    quality: dict[str, Any] = {
        "computed_at": timezone.now().isoformat(),
        "tasks": len(tasks),
        "gold_tasks": sum(t.is_gold for t in tasks.values()),
        "pushed_tasks": sum(t.labelstudio_task_id is not None for t in tasks.values()),
        "annotations": live.count(),
        "deleted_annotations": Annotation.objects.filter(task__round=round_, deleted=True).count(),
        "skipped_annotations": skipped,
        "counted_annotations": len(all_rows),
        "used_annotations": len(used),
        "uncounted_annotations": sum(uncounted.values()),
        "excluded_annotations": len(all_rows) - len(used),
        "annotators": len(stats),
        "flagged_annotators": sorted(counted_users[w][1] for w in flagged),
        "agreement": agreement_used,
        "agreement_all_counted": agreement_all,
        "judgements": len(judgements),
        "rules": rules,
    }
    if kind == Kind.PAIRWISE:
        quality["pairwise"] = _pairwise_summary(round_, regular, tasks)
    round_.quality = quality
    round_.save(update_fields=["quality", "updated_at"])
    return quality


def _aggregate_task(
    kind: str,
    task: LabelTask,
    rows: list[_Row],
    mv: pd.DataFrame | pd.Series,
    ds: pd.DataFrame | None,
) -> dict[str, Any] | None:
    probas = mv if isinstance(mv, pd.DataFrame) and len(mv) else None
    label, p_mv = _winner(probas, task.pk)
    ds_label, p_ds = _winner(ds, task.pk)
    if kind == Kind.PAIRWISE:
        votes = Counter(r.preferred for r in rows if r.preferred)
        if not votes:
            return None
        left, right = votes.get("left", 0), votes.get("right", 0)
        total = left + right
        preferred = "left" if left > right else "right" if right > left else None
        winner = (
            task.generation
            if preferred == "left"
            else task.other_generation
            if preferred == "right"
            else None
        )
        return {
            "preferred": preferred,
            "left_votes": left,
            "right_votes": right,
            "votes": total,
            "win_fraction": max(left, right) / total,
            "winner_generation": winner.pk if winner else None,
            "winner_batch": winner.batch_id if winner else None,
            "p_majority": max(left, right) / total,
            "p_dawid_skene": None,
        }
    key = "aligned" if kind == Kind.ALIGNMENT else "passed"
    labels = [getattr(r, key) for r in rows if getattr(r, key) is not None]
    ratings = [r.rating for r in rows if r.rating is not None]
    if not labels and not ratings:
        return None
    value: dict[str, Any] = {
        key: label if labels else None,
        f"{key}_votes": sum(1 for v in labels if v),
        "votes": len(labels),
        f"{key}_dawid_skene": ds_label if ds is not None else label,
        "p_majority": p_mv,
        "p_dawid_skene": p_ds if ds is not None else p_mv,
        "rating_mean": statistics.fmean(ratings) if ratings else None,
        "rating_median": statistics.median(ratings) if ratings else None,
        "ratings": len(ratings),
    }
    if kind == Kind.ALIGNMENT:
        value["issues"] = dict(Counter(tag for r in rows for tag in r.issues))
    return value


def _pairwise_summary(
    round_: AnnotationRound, rows: list[_Row], tasks: dict[int, LabelTask]
) -> dict[str, Any]:
    """Wins per batch and a Bradley–Terry score per batch (crowd-kit) over every vote."""
    comparisons = []
    for row in rows:
        task = tasks[row.task_id]
        if row.preferred not in ("left", "right") or task.generation is None:
            continue
        left, right = task.generation.batch_id, task.other_generation.batch_id
        comparisons.append(
            {
                "worker": row.worker,
                "left": left,
                "right": right,
                "label": left if row.preferred == "left" else right,
            }
        )
    wins = Counter(c["label"] for c in comparisons)
    summary: dict[str, Any] = {
        "batch_a": round_.generation_batch_id,
        "batch_b": round_.other_generation_batch_id,
        "wins_a": wins.get(round_.generation_batch_id, 0),
        "wins_b": wins.get(round_.other_generation_batch_id, 0),
        "votes": len(comparisons),
    }
    summary["win_rate_a"] = summary["wins_a"] / len(comparisons) if comparisons else None
    if len(wins) == 2:
        with _quiet_pandas():
            scores = BradleyTerry(n_iter=100).fit_predict(pd.DataFrame(comparisons))
        summary["bradley_terry"] = {str(k): float(v) for k, v in scores.items()}
    return summary


# -- curation ---------------------------------------------------------------------------------


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
) -> DatasetVersion:
    """Freeze a DatasetVersion from the round's judgements under explicit rules; round → curated.

    Alignment rows: images judged aligned, caption = prompt. Style rows: passed and rating at or
    above `min_rating`. Pairwise rows: the preferred image where its win fraction beats
    `min_win_fraction`. Gold tasks are never rows. The rules travel in the version's lineage.
    """
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    if round_.state not in (State.PUSHED, State.ANNOTATING, State.CLOSED):
        raise ValueError(f"round {round_.pk} is {round_.state}; only annotated rounds are curated")
    kind = Kind(round_.kind)
    used_rules = rules_for(round_, rules)
    if rules:
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
    return version
