"""Applying what Label Studio's API answered to the platform's annotations, append-only.

The only writer of `Annotation` and `AnnotationVersion`. Its input is a `Pull` (tasks read in
full from Label Studio, plus the tasks it no longer has), never a webhook body. Each change
becomes a version row first (created, edited, deleted, restored; when and how it was seen),
and the `Annotation` row is the latest version's parsed value.

Reads are ordered by when they began (`Pull.read_at`): a read older than the one an annotation's
current state came from never overwrites it, and an edit carrying an older Label Studio
`updated_at` than the stored one (both read from the API) is stale. Ids Label Studio deleted
never return, so an annotation missing from a complete task read is deleted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from curation.labelstudio.parsing import AnnotationRecord, annotation_record
from curation.labelstudio.pull import Pull
from curation.models import (
    Annotation,
    AnnotationRound,
    AnnotationVersion,
    AnnotatorAccount,
    LabelTask,
    RoundNotice,
    WebhookEvent,
)

Change = AnnotationVersion.Change
Source = AnnotationVersion.Source
State = AnnotationRound.State
CURRENT_FIELDS = (
    "annotator_id",
    "annotator_email",
    "labelstudio_user_id",
    "labelstudio_task_id",
    "raw",
    "aligned",
    "passed",
    "rating",
    "preferred",
    "issues",
    "was_cancelled",
    "annotated_at",
    "updated_at",
)


@dataclass
class ApplyReport:
    created: int = 0
    edited: int = 0
    deleted: int = 0
    restored: int = 0
    unchanged: int = 0
    stale: int = 0
    tasks_read: int = 0
    tasks_missing: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.edited or self.deleted or self.restored)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "edited": self.edited,
            "deleted": self.deleted,
            "restored": self.restored,
            "unchanged": self.unchanged,
            "stale": self.stale,
            "tasks_read": self.tasks_read,
            "tasks_missing": self.tasks_missing,
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
    return {
        ls_id: (user_id, email)
        for ls_id, user_id, email in AnnotatorAccount.objects.values_list(
            "labelstudio_user_id", "user_id", "email"
        )
    }


def parsed_fields(
    record: AnnotationRecord, kind: str, accounts: dict[int, tuple[int, str]]
) -> dict[str, Any]:
    """The current-state columns for one annotation as Label Studio returned it."""
    answer = record.answer
    user_id, email = accounts.get(record.completed_by or -1, (None, ""))
    if not email and record.completed_by is not None:
        email = f"labelstudio-user-{record.completed_by}"
    rating = answer.style_rating if kind == "style" else answer.alignment_rating
    return {
        "annotator_id": user_id,
        "annotator_email": email,
        "labelstudio_user_id": record.completed_by,
        "labelstudio_task_id": record.task_id,
        "raw": record.raw or {"id": record.annotation_id, "result": record.result},
        "aligned": answer.aligned,
        "passed": answer.style_pass,
        "rating": rating,
        "preferred": answer.preferred or "",
        "issues": list(answer.issues),
        "was_cancelled": record.was_cancelled,
        "annotated_at": record.created_at,
        "updated_at": record.updated_at,
    }


def current_from_history(annotation: Annotation, kind: str) -> dict[str, Any]:
    """Re-derive an annotation's current columns from its versions alone (the latest that
    carries content, and whether the very latest is a deletion)."""
    versions = list(annotation.versions.order_by("id"))
    if not versions:
        raise ValueError(f"annotation {annotation.labelstudio_id} has no history")
    with_content = [v for v in versions if v.raw is not None]
    latest = with_content[-1]
    record = annotation_record(latest.raw, {"id": latest.labelstudio_task_id})
    values = parsed_fields(record, kind, _accounts())
    values["deleted"] = versions[-1].change == Change.DELETED
    return values


def _notice(round_: AnnotationRound, kind: str, message: str, **details: Any) -> None:
    """One notice per distinct message: a re-read of the same state adds nothing."""
    if not RoundNotice.objects.filter(round=round_, kind=kind, message=message).exists():
        RoundNotice.objects.create(round=round_, kind=kind, message=message, details=details)


def apply_pull(
    round_: AnnotationRound,
    pull: Pull,
    *,
    source: str,
    event: WebhookEvent | None = None,
    missing_reason: str = "task {task} deleted in Label Studio",
) -> ApplyReport:
    """Store what `pull` read from the round's project, as new versions where anything changed."""
    report = ApplyReport(tasks_read=len(pull.tasks), tasks_missing=len(pull.missing_task_ids))
    report.errors.extend(pull.errors)
    with transaction.atomic():
        lock_round(round_.pk)
        round_ = AnnotationRound.objects.get(pk=round_.pk)
        if round_.labelstudio_project_id != pull.project_id:
            report.errors.append(
                f"read of project {pull.project_id} ignored: round {round_.pk} is project "
                f"{round_.labelstudio_project_id} now"
            )
            return report
        _apply_locked(round_, pull, source, event, missing_reason, report)
    return report


def _apply_locked(
    round_: AnnotationRound,
    pull: Pull,
    source: str,
    event: WebhookEvent | None,
    missing_reason: str,
    report: ApplyReport,
) -> None:
    tasks = list(round_.tasks.all())
    by_ls = {t.labelstudio_task_id: t for t in tasks if t.labelstudio_task_id}
    touched = set(pull.tasks) | set(pull.missing_task_ids)
    record_ids = [r.annotation_id for t in pull.tasks.values() for r in t.annotations]
    rows = {
        a.labelstudio_id: a
        for a in Annotation.objects.filter(labelstudio_id__in=record_ids).select_related("task")
    }
    on_task: dict[int, list[Annotation]] = defaultdict(list)
    for a in Annotation.objects.filter(task__round=round_, labelstudio_task_id__in=touched):
        rows.setdefault(a.labelstudio_id, a)
        on_task[a.labelstudio_task_id].append(rows[a.labelstudio_id])
    accounts = _accounts()
    now = pull.read_at
    new_rows: list[Annotation] = []
    dirty: dict[int, Annotation] = {}
    versions: list[tuple[Annotation, dict[str, Any]]] = []

    def version(row: Annotation, change: str, record: AnnotationRecord | None, reason: str = ""):
        versions.append(
            (
                row,
                {
                    "change": change,
                    "source": source,
                    "seen_at": now,
                    "labelstudio_updated_at": record.updated_at if record else None,
                    "labelstudio_task_id": record.task_id if record else row.labelstudio_task_id,
                    "raw": (record.raw or {"id": record.annotation_id}) if record else None,
                    "reason": reason,
                    "webhook_event": event,
                },
            )
        )

    def older_than_stored(row: Annotation) -> bool:
        return row.observed_at is not None and row.observed_at > now

    for task_id, read in sorted(pull.tasks.items()):
        task = by_ls.get(task_id)
        if task is None:
            report.errors.append(
                f"task {task_id} of project {pull.project_id} is not one of round "
                f"{round_.pk}'s tasks; its {len(read.annotations)} annotations are not stored"
            )
            if read.annotations:
                _notice(
                    round_,
                    RoundNotice.Kind.UNKNOWN_TASK,
                    f"Label Studio task {task_id} is in the round's project but is not one of "
                    "its tasks (made by hand there?); its annotations are not counted.",
                    task=task_id,
                )
            continue
        data_key = read.data.get("task_key")
        if read.data and data_key != task.key:
            _notice(
                round_,
                RoundNotice.Kind.TASK_DATA_EDITED,
                f"Task {task.key} (Label Studio task {task_id}) has task_key {data_key!r} in "
                "Label Studio's data; ignored, the stored task id is what maps it.",
                task=task.pk,
                labelstudio_task=task_id,
                data_task_key=data_key,
            )
        present: set[int] = set()
        for record in read.annotations:
            present.add(record.annotation_id)
            row = rows.get(record.annotation_id)
            values = parsed_fields(record, round_.kind, accounts)
            if row is None:
                row = Annotation(task=task, labelstudio_id=record.annotation_id, **values)
                row.observed_at = now
                rows[record.annotation_id] = row
                new_rows.append(row)
                version(row, Change.CREATED, record)
                report.created += 1
                continue
            if row.task_id != task.pk:
                report.errors.append(
                    f"annotation {record.annotation_id}: stored for task {row.task_id}, Label "
                    f"Studio now has it on task {task.pk}; kept the stored one"
                )
                continue
            if older_than_stored(row) or (
                row.observed_at is not None
                and not row.deleted
                and row.updated_at
                and record.updated_at
                and record.updated_at < row.updated_at
            ):
                report.stale += 1
                continue
            if row.deleted:
                change = Change.RESTORED
            elif any(getattr(row, k) != values[k] for k in ("raw", "labelstudio_task_id")):
                change = Change.EDITED
            else:
                report.unchanged += 1
                continue
            for name, value in values.items():
                setattr(row, name, value)
            row.deleted, row.deleted_reason, row.observed_at = False, "", now
            dirty[row.labelstudio_id] = row
            version(row, change, record)
            if change == Change.RESTORED:
                report.restored += 1
            else:
                report.edited += 1
        for row in on_task.get(task_id, []):
            if row.labelstudio_id in present or row.deleted or older_than_stored(row):
                continue
            _delete(row, now, "not in Label Studio any more", dirty, version)
            report.deleted += 1

    for task_id in pull.missing_task_ids:
        reason = missing_reason.format(task=task_id, project=pull.project_id)
        lost = 0
        for row in on_task.get(task_id, []):
            if row.deleted or older_than_stored(row):
                continue
            _delete(row, now, reason, dirty, version)
            report.deleted += 1
            lost += 1
        task = by_ls.get(task_id)
        if task is not None:
            task.previous_labelstudio_task_ids = [*task.previous_labelstudio_task_ids, task_id]
            task.labelstudio_task_id = None
            task.save(update_fields=["labelstudio_task_id", "previous_labelstudio_task_ids"])
        if task is not None or lost:
            key = task.key if task is not None else "?"
            _notice(
                round_,
                RoundNotice.Kind.TASK_DELETED,
                f"Task {key} (Label Studio task {task_id}) is gone from Label Studio ({reason}); "
                f"{lost} live annotations on it are kept here as deleted, with their history. "
                "The next push creates the task again.",
                labelstudio_task=task_id,
                annotations=lost,
            )

    Annotation.objects.bulk_create(new_rows, batch_size=1000)
    if dirty:
        Annotation.objects.bulk_update(
            list(dirty.values()),
            [*CURRENT_FIELDS, "deleted", "deleted_reason", "observed_at"],
            batch_size=1000,
        )
    AnnotationVersion.objects.bulk_create(
        (AnnotationVersion(annotation=row, **values) for row, values in versions),
        batch_size=1000,
    )
    if new_rows or dirty:
        AnnotationRound.objects.filter(pk=round_.pk, state=State.PUSHED).update(
            state=State.ANNOTATING
        )


def _delete(row: Annotation, now: Any, reason: str, dirty: dict, version: Any) -> None:
    row.deleted, row.deleted_reason, row.observed_at = True, reason[:200], now
    dirty[row.labelstudio_id] = row
    version(row, Change.DELETED, None, reason[:200])


def mark_round_lost(round_: AnnotationRound, reason: str, *, source: str) -> int:
    """Every live annotation of the round is gone with its project: one deletion version each."""
    now = timezone.now()
    count = 0
    with transaction.atomic():
        lock_round(round_.pk)
        rows = list(Annotation.objects.filter(task__round=round_, deleted=False))
        for row in rows:
            row.deleted, row.deleted_reason, row.observed_at = True, reason[:200], now
        Annotation.objects.bulk_update(rows, ["deleted", "deleted_reason", "observed_at"])
        AnnotationVersion.objects.bulk_create(
            AnnotationVersion(
                annotation=row,
                change=Change.DELETED,
                source=source,
                seen_at=now,
                labelstudio_task_id=row.labelstudio_task_id,
                reason=reason[:200],
            )
            for row in rows
        )
        count = len(rows)
        tasks = list(LabelTask.objects.filter(round=round_, labelstudio_task_id__isnull=False))
        for task in tasks:
            task.previous_labelstudio_task_ids = [
                *task.previous_labelstudio_task_ids,
                task.labelstudio_task_id,
            ]
            task.labelstudio_task_id = None
        LabelTask.objects.bulk_update(
            tasks, ["labelstudio_task_id", "previous_labelstudio_task_ids"]
        )
    return count


def live_counts(round_: AnnotationRound) -> dict[int, int]:
    """{Label Studio task id: live annotations held} for every mapped task (0 included)."""
    counts = {
        t: 0
        for t in round_.tasks.filter(labelstudio_task_id__isnull=False).values_list(
            "labelstudio_task_id", flat=True
        )
    }
    for task_id in Annotation.objects.filter(
        task__round=round_, deleted=False, labelstudio_task_id__isnull=False
    ).values_list("labelstudio_task_id", flat=True):
        counts[task_id] = counts.get(task_id, 0) + 1
    return counts


def history_of(annotation: Annotation) -> Iterable[AnnotationVersion]:
    return annotation.versions.order_by("id").select_related("webhook_event")
