"""Annotations from Label Studio into the platform: webhook events and reconcile, one upsert.

Webhooks are the fast path and may be lost (Label Studio never retries) or arrive late and out of
order (jobs run in parallel); reconcile pulls what changed since a watermark and is the truth.
So every write is an upsert by Label Studio's annotation id that never lets an older version
overwrite a newer one, and a webhook never resurrects an annotation already marked deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from curation.labelstudio.client import LabelStudioClient
from curation.labelstudio.parsing import (
    AnnotationEvent,
    AnnotationRecord,
    AnnotationsDeleted,
    IgnoredEvent,
    PayloadError,
    TasksCreated,
    TasksDeleted,
    parse_webhook,
)
from curation.models import Annotation, AnnotationRound, LabelTask, Schedule, WebhookEvent
from curation.services.annotators import labelstudio_client
from curation.services.schedules import save_schedule

State = AnnotationRound.State
ACTIVE_STATES = (State.PUSHED, State.ANNOTATING)
RECONCILE_SCHEDULE = "labelstudio reconcile"


@dataclass
class UpsertReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    deleted: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "stale": self.stale,
            "deleted": self.deleted,
            "errors": self.errors[:100],
        }


def lock_round(round_id: int) -> None:
    """Start a write on the round row: call first inside a transaction that reads then writes.

    It serialises concurrent writers of one round (webhook jobs, reconcile, quality), so a stale
    read can never overwrite a newer write; on SQLite it also takes the database write lock before
    any read, which avoids "database is locked" when upgrading a read snapshot to a write.
    """
    AnnotationRound.objects.filter(pk=round_id).update(updated_at=timezone.now())


def _accounts() -> dict[int, tuple[int, str]]:
    from curation.models import AnnotatorAccount

    return {
        ls_id: (user_id, email)
        for ls_id, user_id, email in AnnotatorAccount.objects.values_list(
            "labelstudio_user_id", "user_id", "email"
        )
    }


def _fields(record: AnnotationRecord, kind: str, accounts: dict[int, tuple[int, str]]) -> dict:
    judgement = record.judgement
    user_id, email = accounts.get(record.completed_by or -1, (None, ""))
    if not email and record.completed_by is not None:
        email = f"labelstudio-user-{record.completed_by}"
    rating = judgement.style_rating if kind == "style" else judgement.alignment_rating
    return {
        "annotator_id": user_id,
        "annotator_email": email,
        "labelstudio_user_id": record.completed_by,
        "raw": record.raw or {"id": record.annotation_id, "result": record.result},
        "aligned": judgement.aligned,
        "passed": judgement.style_pass,
        "rating": rating,
        "preferred": judgement.preferred or "",
        "issues": list(judgement.issues),
        "was_cancelled": record.was_cancelled,
        "annotated_at": record.created_at,
        "updated_at": record.updated_at,
    }


_COMPARED = ("raw", "aligned", "passed", "rating", "preferred", "issues", "was_cancelled")


def upsert_annotations(
    round_: AnnotationRound, records: Iterable[AnnotationRecord], *, authoritative: bool
) -> UpsertReport:
    """Create or update annotations of one round by Label Studio id.

    `authoritative` (reconcile: the record is what Label Studio holds now) also clears `deleted`;
    a webhook record never does, because it may be older than a deletion already applied.
    """
    report = UpsertReport()
    records = list(records)
    if not records:
        return report
    with transaction.atomic():
        lock_round(round_.pk)
        _upsert_locked(round_, records, authoritative, report)
    return report


def _upsert_locked(
    round_: AnnotationRound,
    records: list[AnnotationRecord],
    authoritative: bool,
    report: UpsertReport,
) -> None:
    tasks = {t.key: t for t in round_.tasks.all()}
    tasks_by_ls = {t.labelstudio_task_id: t for t in tasks.values() if t.labelstudio_task_id}
    accounts = _accounts()
    existing = {
        a.labelstudio_id: a
        for a in Annotation.objects.filter(labelstudio_id__in=[r.annotation_id for r in records])
    }
    to_create: list[Annotation] = []
    to_update: list[Annotation] = []
    moved_tasks: list[LabelTask] = []
    for record in records:
        task = tasks.get(record.task_key or "") or tasks_by_ls.get(record.task_id)
        if task is None:
            report.errors.append(
                f"annotation {record.annotation_id}: task {record.task_id} "
                f"(task_key {record.task_key!r}) is not in round {round_.pk}"
            )
            continue
        if task.labelstudio_task_id != record.task_id:
            # The task was re-created in Label Studio (after a deletion) and pushed again.
            task.labelstudio_task_id = record.task_id
            moved_tasks.append(task)
        values = _fields(record, round_.kind, accounts)
        row = existing.get(record.annotation_id)
        if row is None:
            row = Annotation(task=task, labelstudio_id=record.annotation_id, **values)
            to_create.append(row)
            existing[record.annotation_id] = row
            continue
        if row.task_id != task.pk:
            report.errors.append(
                f"annotation {record.annotation_id}: already stored for task {row.task_id}, "
                f"Label Studio now says task {task.pk}; kept the stored one"
            )
            continue
        if not authoritative and row.deleted:
            report.stale += 1
            continue
        if row.updated_at and record.updated_at and record.updated_at < row.updated_at:
            report.stale += 1
            continue
        changed = any(getattr(row, name) != values[name] for name in _COMPARED) or (
            authoritative and row.deleted
        )
        for name, value in values.items():
            setattr(row, name, value)
        if authoritative:
            row.deleted = False
        if changed or row.pk is None:
            to_update.append(row)
            report.updated += 1
        else:
            report.unchanged += 1
    Annotation.objects.bulk_create(to_create, batch_size=1000)
    if to_update:
        Annotation.objects.bulk_update(
            [r for r in to_update if r.pk is not None],
            [*_fields_names(), "deleted"],
            batch_size=1000,
        )
    if moved_tasks:
        LabelTask.objects.bulk_update(moved_tasks, ["labelstudio_task_id"])
    if to_create or to_update:
        AnnotationRound.objects.filter(pk=round_.pk, state=State.PUSHED).update(
            state=State.ANNOTATING
        )
    report.created = len(to_create)


def _fields_names() -> list[str]:
    return [
        "annotator_id",
        "annotator_email",
        "labelstudio_user_id",
        "raw",
        "aligned",
        "passed",
        "rating",
        "preferred",
        "issues",
        "was_cancelled",
        "annotated_at",
        "updated_at",
    ]


def mark_annotations_deleted(round_: AnnotationRound, annotation_ids: Sequence[int]) -> int:
    return Annotation.objects.filter(
        task__round=round_, labelstudio_id__in=list(annotation_ids), deleted=False
    ).update(deleted=True)


def mark_tasks_deleted(round_: AnnotationRound, task_ids: Sequence[int]) -> int:
    """Label Studio deleted tasks (and with them their annotations); the next push re-creates
    the tasks, since a round's tasks are the platform's to decide."""
    tasks = LabelTask.objects.filter(round=round_, labelstudio_task_id__in=list(task_ids))
    Annotation.objects.filter(task__in=tasks, deleted=False).update(deleted=True)
    return tasks.update(labelstudio_task_id=None)


# -- webhooks -------------------------------------------------------------------------------


def _round_for_project(project_id: int | None) -> AnnotationRound | None:
    if project_id is None:
        return None
    return AnnotationRound.objects.filter(labelstudio_project_id=project_id).first()


def process_webhook_event(event: WebhookEvent) -> dict[str, Any]:
    """Apply one stored event. The event row is never deleted; its outcome is written on it.

    Bad payloads and events for projects that are no round end as processed with `error` set;
    a database failure propagates (the job retries) and leaves the event unprocessed.
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
        elif isinstance(parsed, AnnotationEvent):
            report = upsert_annotations(round_, parsed.annotations, authoritative=False)
            outcome.update(report.as_dict())
            error = "; ".join(report.errors)[:4000]
        elif isinstance(parsed, AnnotationsDeleted):
            outcome["deleted"] = mark_annotations_deleted(round_, parsed.annotation_ids)
        elif isinstance(parsed, TasksDeleted):
            outcome["tasks_deleted"] = mark_tasks_deleted(round_, parsed.task_ids)
        outcome["round"] = round_.pk if round_ else None
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


# -- reconcile ------------------------------------------------------------------------------


def reconcile_round(
    round_: AnnotationRound,
    *,
    client: LabelStudioClient | None = None,
    full_deletion_scan: bool = True,
) -> dict[str, Any]:
    """Pull every annotation changed since the watermark, upsert, apply deletions, then advance
    the watermark (only after the writes committed: a crash re-reads, never skips)."""
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    if round_.labelstudio_project_id is None:
        raise ValueError(f"round {round_.pk} has not been pushed to Label Studio")
    client = client or labelstudio_client()
    known = dict(
        Annotation.objects.filter(
            task__round=round_, deleted=False, task__labelstudio_task_id__isnull=False
        ).values_list("labelstudio_id", "task__labelstudio_task_id")
    )
    pulled = client.annotations_updated_since(
        round_.labelstudio_project_id,
        round_.reconcile_watermark,
        known_annotation_ids=known,
        full_deletion_scan=full_deletion_scan,
    )
    with transaction.atomic():
        lock_round(round_.pk)
        report = upsert_annotations(round_, pulled.annotations, authoritative=True)
        deleted = mark_annotations_deleted(round_, pulled.deleted_annotation_ids)
        tasks_deleted = mark_tasks_deleted(round_, pulled.deleted_task_ids)
        if pulled.watermark is not None:
            AnnotationRound.objects.filter(pk=round_.pk).update(
                reconcile_watermark=pulled.watermark
            )
    result = report.as_dict()
    result.update(
        round=round_.pk,
        pulled=len(pulled.annotations),
        tasks_seen=pulled.tasks_seen,
        deleted=deleted,
        tasks_deleted=tasks_deleted,
        watermark=pulled.watermark.isoformat() if pulled.watermark else None,
        errors=(report.errors + pulled.errors)[:100],
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
