"""Annotations from Label Studio into the platform: webhooks are hints, the API is the record.

Label Studio signs nothing: its webhook secret is a static header every member of its
organization can read from `/api/webhooks/`. So a webhook, authenticated or not, is only a hint
naming what changed; the platform then reads those tasks from Label Studio's API and stores what
Label Studio says (`annotation_store.apply_pull`). A forged webhook can at most make the
platform re-read a task. Reconcile pulls every changed task (or the whole project) and is the
authority: it overrides anything stored. Only the stored Label Studio task id maps a task to
ours; `task_key` in task data is editable there and never trusted.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from curation.labelstudio.client import LabelStudioClient
from curation.labelstudio.parsing import (
    AnnotationEvent,
    AnnotationsDeleted,
    IgnoredEvent,
    ParsedWebhook,
    PayloadError,
    TasksCreated,
    TasksDeleted,
    parse_webhook,
)
from curation.models import Annotation, AnnotationRound, RoundNotice, Schedule, WebhookEvent
from curation.services.annotation_store import (
    Source,
    apply_pull,
    live_counts,
    lock_round,
)
from curation.services.annotators import labelstudio_client
from curation.services.schedules import save_schedule

State = AnnotationRound.State
ACTIVE_STATES = (State.PUSHED, State.ANNOTATING)
RECONCILE_SCHEDULE = "labelstudio reconcile"

__all__ = [
    "lock_round",
    "process_webhook_event",
    "reconcile_round",
    "replay_pending_events",
    "hinted_task_ids",
]


def _round_for_project(project_id: int | None) -> AnnotationRound | None:
    if project_id is None:
        return None
    return AnnotationRound.objects.filter(labelstudio_project_id=project_id).first()


def hinted_task_ids(parsed: ParsedWebhook, round_: AnnotationRound) -> tuple[list[int], list[int]]:
    """(the round's Label Studio task ids the event names, ids it names that are not the round's).

    Annotation deletions carry annotation ids only: they name the tasks the platform holds
    those annotations on. Nothing else in the body is used.
    """
    if isinstance(parsed, AnnotationEvent):
        named = {record.task_id for record in parsed.annotations}
    elif isinstance(parsed, AnnotationsDeleted):
        named = set(
            Annotation.objects.filter(
                task__round=round_, labelstudio_id__in=list(parsed.annotation_ids)
            )
            .exclude(labelstudio_task_id__isnull=True)
            .values_list("labelstudio_task_id", flat=True)
        )
    elif isinstance(parsed, TasksDeleted):
        named = set(parsed.task_ids)
    else:
        named = set()
    ours = set(
        round_.tasks.filter(labelstudio_task_id__in=named).values_list(
            "labelstudio_task_id", flat=True
        )
    ) | set(
        Annotation.objects.filter(task__round=round_, labelstudio_task_id__in=named).values_list(
            "labelstudio_task_id", flat=True
        )
    )
    return sorted(ours), sorted(named - ours)


def process_webhook_event(
    event: WebhookEvent, *, client: LabelStudioClient | None = None
) -> dict[str, Any]:
    """Re-read from Label Studio the tasks one stored event names; the event row is never
    deleted and its outcome is written on it.

    Bad payloads and events for projects that are no round end as processed with `error` set;
    a database or Label Studio failure propagates (the job retries) and leaves it unprocessed.
    """
    parsed = parse_webhook(event.payload)
    outcome: dict[str, Any] = {"event": event.pk, "action": event.action}
    error = ""
    if isinstance(parsed, PayloadError):
        error = f"unreadable payload: {parsed.reason}"
    elif isinstance(parsed, IgnoredEvent | TasksCreated):
        outcome["ignored"] = True
    else:
        round_ = _round_for_project(parsed.project_id)
        if round_ is None:
            error = f"ignored: Label Studio project {parsed.project_id} belongs to no round"
        else:
            ours, foreign = hinted_task_ids(parsed, round_)
            outcome.update(round=round_.pk, tasks=ours)
            notes = [f"task {t} is not one of round {round_.pk}'s tasks; not read" for t in foreign]
            if ours:
                client = client or labelstudio_client()
                pull = client.read_tasks(round_.labelstudio_project_id, ours)
                report = apply_pull(round_, pull, source=Source.WEBHOOK, event=event)
                outcome.update(report.as_dict())
                notes += report.errors
            error = "; ".join(notes)[:4000]
    WebhookEvent.objects.filter(pk=event.pk).update(processed_at=timezone.now(), error=error)
    outcome["error"] = error
    return outcome


def replay_pending_events(older_than: timedelta = timedelta(seconds=30)) -> int:
    """Process events whose job never ran (worker down, enqueue failed); returns how many."""
    cutoff = timezone.now() - older_than
    done = 0
    for event in WebhookEvent.objects.filter(
        processed_at__isnull=True, received_at__lte=cutoff
    ).order_by("pk"):
        process_webhook_event(event)
        done += 1
    return done


def reconcile_round(
    round_: AnnotationRound,
    *,
    client: LabelStudioClient | None = None,
    full_deletion_scan: bool = True,
    full: bool = False,
) -> dict[str, Any]:
    """Pull what changed since the watermark (`full`: the whole project) and store it as the
    record, then advance the watermark in the same transaction (a crash re-reads, never skips).
    """
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    if round_.labelstudio_project_id is None:
        raise ValueError(f"round {round_.pk} has not been pushed to Label Studio")
    client = client or labelstudio_client()
    project_id = round_.labelstudio_project_id
    if not client.project_exists(project_id):
        message = (
            f"Label Studio project {project_id} no longer exists; push the round again to "
            "re-create it (the annotations held here are kept)."
        )
        if not RoundNotice.objects.filter(round=round_, message=message).exists():
            RoundNotice.objects.create(
                round=round_, kind=RoundNotice.Kind.PROJECT_REPLACED, message=message
            )
        raise ValueError(f"round {round_.pk}: {message}")
    pull = client.pull(
        project_id,
        None if full else round_.reconcile_watermark,
        known_counts=live_counts(round_),
        full_deletion_scan=full_deletion_scan,
    )
    with transaction.atomic():
        report = apply_pull(round_, pull, source=Source.RECONCILE)
        if pull.watermark is not None:
            AnnotationRound.objects.filter(pk=round_.pk).update(reconcile_watermark=pull.watermark)
    result = report.as_dict()
    result.update(
        round=round_.pk,
        full=full or round_.reconcile_watermark is None,
        pulled=len(pull.annotations),
        tasks_listed=pull.tasks_listed,
        watermark=pull.watermark.isoformat() if pull.watermark else None,
    )
    return result


def active_rounds() -> list[AnnotationRound]:
    return list(
        AnnotationRound.objects.filter(
            state__in=ACTIVE_STATES, labelstudio_project_id__isnull=False
        ).order_by("pk")
    )


def ensure_default_schedules() -> list[Schedule]:
    """The scheduled reconcile of every active round (and replay of unprocessed webhooks)."""
    schedule = Schedule.objects.filter(name=RECONCILE_SCHEDULE).first()
    if schedule is None:
        schedule = save_schedule(
            Schedule(
                name=RECONCILE_SCHEDULE,
                cron="*/5 * * * *",
                job_kind="labelstudio.reconcile",
                queue="default",
                params={},
            )
        )
    return [schedule]
