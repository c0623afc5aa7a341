"""Reads for round pages: counts per round without loading annotations."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet

from curation.models import Annotation, AnnotationRound, WebhookEvent

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
