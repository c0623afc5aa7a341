"""A round's quality and judgements: who counts, gold, agreement, then crowd-kit aggregation.

Order matters and is the same every time: (1) keep annotations that count (live, not skipped,
by an account the platform made for a current annotator, or, once the round is closed, exactly
the annotation versions and annotators its closing snapshot recorded); (2) score each annotator
on gold and exclude those gold says are below the threshold; (3) measure agreement; (4)
aggregate the remaining annotators' labels per task with crowd-kit.
"""

from __future__ import annotations

import contextlib
import statistics
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pandas as pd
from crowdkit.aggregation import BradleyTerry, DawidSkene, MajorityVote
from django.db import transaction
from django.utils import timezone

from curation.labelstudio.parsing import annotation_record
from curation.models import (
    Annotation,
    AnnotationRound,
    AnnotationVersion,
    AnnotatorRoundStats,
    Judgement,
    LabelTask,
)
from curation.services.agreement import Vote, agreement, consensus_agreement
from curation.services.annotation_store import lock_round
from curation.services.annotators import counted_labelstudio_users
from curation.services.gold import GoldPolicy, score_gold

Kind = AnnotationRound.Kind

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
COMMON_RULES = {"rating_tolerance": 1}


def rules_for(round_: AnnotationRound, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The curation rules in force: a closed round's snapshot, else defaults + the round's."""
    pinned = (round_.closing_snapshot or {}).get("rules")
    if pinned is not None:
        rules = dict(pinned)
    else:
        rules = {
            **COMMON_RULES,
            **DEFAULT_RULES[Kind(round_.kind)],
            **(round_.curation_rules or {}),
        }
    rules.update(overrides or {})
    if rules.get("method", "majority") not in ("majority", "dawid_skene"):
        raise ValueError(f"rules.method: {rules['method']!r} is not 'majority' or 'dawid_skene'")
    return rules


@contextlib.contextmanager
def _quiet_pandas() -> Iterator[None]:
    """crowd-kit 1.4.2 passes keywords pandas 3 deprecates (inplace, copy); results are unaffected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*The (inplace|copy) keyword.*")
        yield


def _majority(votes: list[Vote], name: str) -> tuple[pd.Series, pd.DataFrame]:
    frame = pd.DataFrame(
        [
            {"task": v.task_id, "worker": v.worker, "label": getattr(v, name)}
            for v in votes
            if getattr(v, name) not in (None, "")
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


def _vote_values(kind: str, record: Any) -> dict[str, Any]:
    answer = record.answer
    return {
        "aligned": answer.aligned,
        "passed": answer.style_pass,
        "rating": answer.style_rating if kind == Kind.STYLE else answer.alignment_rating,
        "preferred": answer.preferred or "",
        "issues": list(answer.issues),
    }


def _live_votes(
    round_: AnnotationRound, tasks: dict[int, LabelTask], counted: set[int]
) -> tuple[list[Vote], Counter, int, list[int]]:
    """Votes of counted annotators now: (votes, uncounted per user, skipped, version ids)."""
    votes: list[Vote] = []
    uncounted: Counter = Counter()
    skipped = 0
    latest = dict(
        AnnotationVersion.objects.filter(annotation__task__round=round_)
        .order_by("annotation_id", "id")
        .values_list("annotation_id", "id")
    )
    version_ids = []
    for a in Annotation.objects.filter(task__round=round_, deleted=False).values(
        "pk",
        "task_id",
        "labelstudio_user_id",
        "aligned",
        "passed",
        "rating",
        "preferred",
        "issues",
        "was_cancelled",
    ):
        if a["pk"] in latest:
            version_ids.append(latest[a["pk"]])
        if a["was_cancelled"]:
            skipped += 1
            continue
        if a["labelstudio_user_id"] not in counted:
            uncounted[a["labelstudio_user_id"]] += 1
            continue
        votes.append(
            Vote(
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
    return votes, uncounted, skipped, sorted(version_ids)


def _snapshot_votes(
    round_: AnnotationRound, tasks: dict[int, LabelTask], counted: set[int]
) -> tuple[list[Vote], Counter, int]:
    """Votes exactly as the closing snapshot pinned them (versions, not current rows)."""
    votes: list[Vote] = []
    uncounted: Counter = Counter()
    skipped = 0
    ids = round_.closing_snapshot.get("annotation_versions", [])
    for version in (
        AnnotationVersion.objects.filter(pk__in=ids).select_related("annotation").order_by("pk")
    ):
        record = annotation_record(version.raw or {}, {"id": version.labelstudio_task_id})
        if record.was_cancelled:
            skipped += 1
            continue
        if record.completed_by not in counted:
            uncounted[record.completed_by] += 1
            continue
        task_id = version.annotation.task_id
        votes.append(
            Vote(
                task_id=task_id,
                is_gold=tasks[task_id].is_gold,
                worker=record.completed_by,
                **_vote_values(round_.kind, record),
            )
        )
    return votes, uncounted, skipped


@transaction.atomic
def compute_round_quality(round_: AnnotationRound) -> dict[str, Any]:
    """Recompute annotator stats, agreement and judgements for a round; returns `round.quality`."""
    lock_round(round_.pk)
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    kind = Kind(round_.kind)
    rules = rules_for(round_)
    snapshot = round_.closing_snapshot or {}
    tasks = {t.pk: t for t in round_.tasks.select_related("generation", "other_generation")}
    if snapshot:
        labels = {int(k): v for k, v in snapshot["counted"].items()}
        counted_users = {ls_id: (None, label) for ls_id, label in labels.items()}
        policy = GoldPolicy.from_dict(snapshot["gold_policy"])
        votes, uncounted, skipped = _snapshot_votes(round_, tasks, set(counted_users))
        version_ids = list(snapshot["annotation_versions"])
    else:
        counted_users = counted_labelstudio_users()
        policy = GoldPolicy.of(round_, int(rules["rating_tolerance"]))
        votes, uncounted, skipped, version_ids = _live_votes(round_, tasks, set(counted_users))

    scores = score_gold(votes, tasks, policy)
    flagged = {w for w, s in scores.items() if s.excluded_reason}
    used = [v for v in votes if v.worker not in flagged]
    regular = [v for v in used if not v.is_gold]

    fields = FIELDS[kind]
    agreement_used = {name: agreement(used, name, level) for name, level in fields}
    agreement_all = {name: agreement(votes, name, level) for name, level in fields}

    primary = fields[0][0]
    mv, frame = _majority(regular, primary)
    ds = _dawid_skene(frame)
    by_task: dict[int, list[Vote]] = defaultdict(list)
    for vote in regular:
        by_task[vote.task_id].append(vote)
    judgements: list[Judgement] = []
    for task_id, task_votes in sorted(by_task.items()):
        value = _aggregate_task(kind, tasks[task_id], task_votes, mv, ds)
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

    consensus = consensus_agreement(votes, primary)
    emails = dict(
        Annotation.objects.filter(task__round=round_)
        .exclude(labelstudio_user_id__isnull=True)
        .values_list("labelstudio_user_id", "annotator_email")
    )
    AnnotatorRoundStats.objects.filter(round=round_).delete()
    counts = Counter(v.worker for v in votes)
    stat_rows = [
        AnnotatorRoundStats(
            round=round_,
            labelstudio_user_id=worker,
            user_id=counted_users[worker][0],
            label=counted_users[worker][1],
            annotations=counts[worker],
            gold_answered=s.answered,
            gold_correct=s.correct,
            gold_accuracy=s.accuracy,
            gold_accuracy_low=s.low,
            gold_accuracy_high=s.high,
            consensus_agreement=consensus.get(worker),
            counted=True,
            flagged=bool(s.excluded_reason),
            excluded_reason=s.excluded_reason,
        )
        for worker, s in sorted(scores.items())
    ]
    stat_rows += [
        AnnotatorRoundStats(
            round=round_,
            labelstudio_user_id=worker,
            label=emails.get(worker, "") or f"labelstudio-user-{worker}",
            annotations=n,
            counted=False,
            excluded_reason="not an account the platform made for a current annotator",
        )
        for worker, n in sorted(uncounted.items(), key=lambda kv: kv[0] or 0)
        if worker is not None
    ]
    AnnotatorRoundStats.objects.bulk_create(stat_rows)

    live = Annotation.objects.filter(task__round=round_, deleted=False)
    quality: dict[str, Any] = {
        "computed_at": timezone.now().isoformat(),
        "from_closing_snapshot": bool(snapshot),
        "tasks": len(tasks),
        "gold_tasks": sum(t.is_gold for t in tasks.values()),
        "pushed_tasks": sum(t.labelstudio_task_id is not None for t in tasks.values()),
        "annotations": live.count(),
        "deleted_annotations": Annotation.objects.filter(task__round=round_, deleted=True).count(),
        "skipped_annotations": skipped,
        "counted_annotations": len(votes),
        "used_annotations": len(used),
        "uncounted_annotations": sum(uncounted.values()),
        "excluded_annotations": len(votes) - len(used),
        "annotators": len(scores),
        "flagged_annotators": sorted(counted_users[w][1] for w in flagged),
        "excluded": {counted_users[w][1]: scores[w].excluded_reason for w in sorted(flagged)},
        "counted_annotators": {str(w): counted_users[w][1] for w in sorted(counted_users)},
        "annotation_versions": version_ids,
        "gold_policy": policy.as_dict(),
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
    votes: list[Vote],
    mv: pd.DataFrame | pd.Series,
    ds: pd.DataFrame | None,
) -> dict[str, Any] | None:
    probas = mv if isinstance(mv, pd.DataFrame) and len(mv) else None
    label, p_mv = _winner(probas, task.pk)
    ds_label, p_ds = _winner(ds, task.pk)
    if kind == Kind.PAIRWISE:
        tally = Counter(v.preferred for v in votes if v.preferred)
        if not tally:
            return None
        left, right, ties = tally.get("left", 0), tally.get("right", 0), tally.get("tie", 0)
        total = left + right + ties  # a tie is a vote for neither side
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
            "tie_votes": ties,
            "votes": total,
            "win_fraction": max(left, right) / total,
            "winner_generation": winner.pk if winner else None,
            "winner_batch": winner.batch_id if winner else None,
            "p_majority": max(left, right) / total,
            "p_dawid_skene": None,
        }
    key = "aligned" if kind == Kind.ALIGNMENT else "passed"
    labels = [getattr(v, key) for v in votes if getattr(v, key) is not None]
    ratings = [v.rating for v in votes if v.rating is not None]
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
        value["issues"] = dict(Counter(tag for v in votes for tag in v.issues))
    return value


def _pairwise_summary(
    round_: AnnotationRound, votes: list[Vote], tasks: dict[int, LabelTask]
) -> dict[str, Any]:
    """Wins per batch and a Bradley–Terry score per batch (crowd-kit) over every vote."""
    comparisons = []
    for vote in votes:
        task = tasks[vote.task_id]
        if vote.preferred not in ("left", "right") or task.generation is None:
            continue
        left, right = task.generation.batch_id, task.other_generation.batch_id
        comparisons.append(
            {
                "worker": vote.worker,
                "left": left,
                "right": right,
                "label": left if vote.preferred == "left" else right,
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
