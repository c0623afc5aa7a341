"""Reads for round pages: counts and progress per round without loading annotations."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, IntegerField, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, Least

from curation.models import Annotation, AnnotationRound, LabelTask, WebhookEvent

ROUND_INTERNALS_PERMISSION = "curation.change_annotationround"


def sees_round_internals(user: Any) -> bool:
    """Data leads and admins see every round with its gold settings; annotators do not."""
    return bool(user and user.is_authenticated and user.has_perm(ROUND_INTERNALS_PERMISSION))


def visible_rounds(user: Any) -> QuerySet[AnnotationRound]:
    """Every round for those who run them; for an annotator only the rounds they are in."""
    rounds = AnnotationRound.objects.all()
    if sees_round_internals(user):
        return rounds
    if not (user and user.is_authenticated):
        return rounds.none()
    return rounds.filter(members=user, archived=False)


def round_counts(round_: AnnotationRound) -> dict[str, Any]:
    tasks = round_.tasks.aggregate(
        n_total=Count("pk"),
        n_gold=Count("pk", filter=Q(is_gold=True)),
        n_pushed=Count("pk", filter=Q(labelstudio_task_id__isnull=False)),
        n_judged=Count("judgement"),
    )
    annotations = Annotation.objects.filter(task__round=round_).aggregate(
        n_total=Count("pk"),
        n_live=Count("pk", filter=Q(deleted=False, was_cancelled=False)),
        n_deleted=Count("pk", filter=Q(deleted=True)),
        n_skipped=Count("pk", filter=Q(was_cancelled=True, deleted=False)),
        n_annotators=Count("labelstudio_user_id", distinct=True, filter=Q(deleted=False)),
    )
    # Aggregate names may not shadow field names (`deleted`), hence the prefix, dropped here.
    return {
        "tasks": {k[2:]: v for k, v in tasks.items()},
        "annotations": {k[2:]: v for k, v in annotations.items()},
    }


def webhook_backlog() -> int:
    """Events stored but not yet applied (their job has not run yet, or failed)."""
    return WebhookEvent.objects.filter(processed_at__isnull=True).count()


def with_progress(rounds: QuerySet[AnnotationRound]) -> QuerySet[AnnotationRound]:
    """Annotate `n_tasks` and `n_done` (live annotations per task, capped at the round's overlap,
    summed) in the list query itself, so a page of rounds costs one query, not one per round."""
    live = (
        Annotation.objects.filter(task=OuterRef("pk"), deleted=False, was_cancelled=False)
        .order_by()
        .values("task")
        .annotate(n=Count("pk"))
        .values("n")
    )
    per_task = (
        LabelTask.objects.filter(round=OuterRef("pk"))
        .order_by()
        .annotate(
            capped=Least(
                Coalesce(Subquery(live), 0), OuterRef("overlap"), output_field=IntegerField()
            )
        )
        .values("round")
        .annotate(total=Sum("capped", output_field=IntegerField()))
        .values("total")
    )
    n_tasks = (
        LabelTask.objects.filter(round=OuterRef("pk"))
        .order_by()
        .values("round")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return rounds.annotate(
        n_tasks=Coalesce(Subquery(n_tasks), 0), n_done=Coalesce(Subquery(per_task), 0)
    )


def percent_done(n_tasks: int, n_done: int, overlap: int) -> float:
    wanted = n_tasks * max(overlap, 1)
    return round(100.0 * n_done / wanted, 1) if wanted else 0.0


def round_progress(round_: AnnotationRound) -> dict[str, Any]:
    row = with_progress(AnnotationRound.objects.filter(pk=round_.pk)).values("n_tasks", "n_done")
    found = row.first() or {"n_tasks": 0, "n_done": 0}
    return {
        **found,
        "wanted": found["n_tasks"] * max(round_.overlap, 1),
        "percent": percent_done(found["n_tasks"], found["n_done"], round_.overlap),
    }


def annotator_progress(round_: AnnotationRound) -> list[dict[str, Any]]:
    """Per annotator of the round: live annotations, share of the round's tasks, last activity,
    and the quality the last computation stored (gold accuracy, agreement, flag)."""
    n_tasks = round_.tasks.count()
    live = (
        Annotation.objects.filter(task__round=round_, deleted=False, was_cancelled=False)
        .values("labelstudio_user_id")
        .annotate(
            annotations=Count("pk"),
            tasks=Count("task", distinct=True),
            last=Max("updated_at"),
            email=Max("annotator_email"),
        )
        .order_by("labelstudio_user_id")
    )
    skipped = dict(
        Annotation.objects.filter(task__round=round_, deleted=False, was_cancelled=True)
        .values("labelstudio_user_id")
        .annotate(n=Count("pk"))
        .values_list("labelstudio_user_id", "n")
    )
    stats = {s.labelstudio_user_id: s for s in round_.annotator_stats.all()}
    rows = []
    for entry in live:
        worker = entry["labelstudio_user_id"]
        stat = stats.pop(worker, None)
        rows.append(_annotator_row(worker, entry, stat, skipped.get(worker, 0), n_tasks))
    for worker, stat in stats.items():  # computed once, since gone from the live annotations
        rows.append(_annotator_row(worker, None, stat, skipped.get(worker, 0), n_tasks))
    return rows


def _annotator_row(
    worker: int | None, entry: dict | None, stat: Any, skipped: int, n_tasks: int
) -> dict[str, Any]:
    tasks = entry["tasks"] if entry else 0
    return {
        "annotator": (stat.label if stat else "") or (entry or {}).get("email") or f"#{worker}",
        "annotations": entry["annotations"] if entry else 0,
        "tasks": tasks,
        "percent_of_tasks": round(100.0 * tasks / n_tasks, 1) if n_tasks else 0.0,
        "skipped": skipped,
        "last": entry["last"] if entry else None,
        "gold_accuracy": stat.gold_accuracy if stat else None,
        "gold_answered": stat.gold_answered if stat else 0,
        "consensus_agreement": stat.consensus_agreement if stat else None,
        "counted": stat.counted if stat else None,
        "flagged": bool(stat and stat.flagged),
    }


# The parsed answer fields each kind has (what `round_annotations` prints beside the ids).
ANSWER_FIELDS = {
    AnnotationRound.Kind.ALIGNMENT: ("aligned", "rating", "issues"),
    AnnotationRound.Kind.STYLE: ("passed", "rating"),
    AnnotationRound.Kind.PAIRWISE: ("preferred",),
}


def round_annotations(round_: AnnotationRound) -> list[dict[str, Any]]:
    """The round's current (live) annotations, one plain object each, ordered by Label Studio
    id: what a data lead diffs against Label Studio's own export."""
    names = ANSWER_FIELDS[AnnotationRound.Kind(round_.kind)]
    rows = (
        Annotation.objects.filter(task__round=round_, deleted=False)
        .order_by("labelstudio_id")
        .values(
            "labelstudio_id",
            "labelstudio_task_id",
            "annotator_email",
            "updated_at",
            "was_cancelled",
            *names,
        )
    )
    out = []
    for row in rows:
        row["updated_at"] = row["updated_at"].isoformat() if row["updated_at"] else None
        if "preferred" in row:
            row["preferred"] = row["preferred"] or None
        out.append(row)
    return out
