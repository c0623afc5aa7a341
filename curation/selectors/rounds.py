"""Reads for round pages: counts per round without loading annotations."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q

from curation.models import Annotation, AnnotationRound, WebhookEvent


def round_counts(round_: AnnotationRound) -> dict[str, Any]:
    tasks = round_.tasks.aggregate(
        total=Count("pk"),
        gold=Count("pk", filter=Q(is_gold=True)),
        pushed=Count("pk", filter=Q(labelstudio_task_id__isnull=False)),
        judged=Count("judgement"),
    )
    annotations = Annotation.objects.filter(task__round=round_).aggregate(
        total=Count("pk"),
        live=Count("pk", filter=Q(deleted=False, was_cancelled=False)),
        deleted=Count("pk", filter=Q(deleted=True)),
        skipped=Count("pk", filter=Q(was_cancelled=True, deleted=False)),
        annotators=Count("labelstudio_user_id", distinct=True, filter=Q(deleted=False)),
    )
    return {"tasks": tasks, "annotations": annotations}


def webhook_backlog() -> int:
    """Events stored but not yet applied (their job has not run yet, or failed)."""
    return WebhookEvent.objects.filter(processed_at__isnull=True).count()
