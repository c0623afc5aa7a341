"""Reading annotations back from Label Studio: whole tasks, as the record.

Everything the platform stores about an annotation comes from here, never from a webhook body:
a read returns, for each task it covers, the task's complete list of annotations (skips
included) as Label Studio's export endpoint gives them, with the platform-clock time the read
began. Whoever applies a read can then say "this annotation is gone" from its absence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from curation.labelstudio.base import LabelStudioBase, LabelStudioError, dm_datetime
from curation.labelstudio.parsing import AnnotationRecord, annotation_record, parse_datetime

_COUNT_FIELDS = "id,updated_at,total_annotations,cancelled_annotations"
EXPORT_CHUNK = 500  # Django refuses more than 1,000 query parameters


@dataclass(frozen=True)
class TaskRead:
    """One task as Label Studio holds it: its data and every annotation on it."""

    task_id: int
    data: dict[str, Any]
    annotations: list[AnnotationRecord]


@dataclass(frozen=True)
class Pull:
    """What one read found. `tasks` are complete; `missing_task_ids` were asked for (or known)
    but are not in the project any more. `watermark` is what to pass to the next
    incremental pull. `read_at` (platform clock, UTC) orders reads against each other."""

    project_id: int
    read_at: datetime
    tasks: dict[int, TaskRead]
    missing_task_ids: list[int]
    watermark: datetime | None = None
    tasks_listed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def annotations(self) -> list[AnnotationRecord]:
        return [record for task in self.tasks.values() for record in task.annotations]


def _count(task: Mapping[str, Any]) -> int:
    return int(task.get("total_annotations") or 0) + int(task.get("cancelled_annotations") or 0)


class PullMixin(LabelStudioBase):
    def export_tasks(
        self, project_id: int, task_ids: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        """Tasks with all their annotations (skips included), via the synchronous JSON export.

        `task_ids=None` exports the whole project; otherwise pass fewer than 1,000 ids.
        """
        params: dict[str, Any] = {"exportType": "JSON", "download_all_tasks": "true"}
        if task_ids is not None:
            if not task_ids:
                return []
            params["ids[]"] = [int(t) for t in task_ids]
        payload = self._get_json(f"api/projects/{project_id}/export", params)
        if not isinstance(payload, list):
            raise LabelStudioError(f"export of project {project_id}: expected a list of tasks")
        return payload

    def _read(
        self, project_id: int, task_ids: Sequence[int] | None, into: dict[int, TaskRead]
    ) -> tuple[list[str], datetime | None]:
        """Read tasks in full into `into`; returns problems and the newest task `updated_at`."""
        errors: list[str] = []
        newest: datetime | None = None
        chunks: list[Sequence[int] | None] = (
            [None]
            if task_ids is None
            else [task_ids[i : i + EXPORT_CHUNK] for i in range(0, len(task_ids), EXPORT_CHUNK)]
        )
        for chunk in chunks:
            wanted = None if chunk is None else set(chunk)
            for task in self.export_tasks(project_id, chunk):
                task_id = int(task["id"])
                if wanted is not None and task_id not in wanted:
                    continue
                updated = parse_datetime(task.get("updated_at"))
                if updated is not None and (newest is None or updated > newest):
                    newest = updated
                records = []
                for raw in task.get("annotations") or []:
                    try:
                        records.append(annotation_record(raw, task))
                    except ValueError as exc:
                        errors.append(f"task {task_id}: {exc}")
                into[task_id] = TaskRead(task_id, dict(task.get("data") or {}), records)
        return errors, newest

    def read_tasks(self, project_id: int, task_ids: Sequence[int]) -> Pull:
        """The named tasks in full; those Label Studio no longer has come back as missing."""
        read_at = datetime.now(UTC)
        ids = sorted({int(t) for t in task_ids})
        tasks: dict[int, TaskRead] = {}
        errors = self._read(project_id, ids, tasks)[0] if ids else []
        return Pull(
            project_id=project_id,
            read_at=read_at,
            tasks=tasks,
            missing_task_ids=[t for t in ids if t not in tasks],
            tasks_listed=len(ids),
            errors=errors,
        )

    def pull(
        self,
        project_id: int,
        watermark: datetime | None,
        *,
        known_counts: Mapping[int, int] | None = None,
        full_deletion_scan: bool = True,
        overlap: timedelta = timedelta(seconds=5),
    ) -> Pull:
        """Every task changed since `watermark - overlap`, in full, plus what vanished.

        Annotation create, edit and delete all bump the task's `updated_at`, so a data-manager
        query on it (`only_annotated` does not filter) finds every changed task cheaply (ids and
        counts only); they are then read through the export endpoint for just those ids. The
        overlap re-reads a few seconds so a write committed late is not missed. With
        `known_counts` ({task id: live annotations the platform holds}) and
        `full_deletion_scan`, an id/count scan of the whole project (~12 s at 20k tasks on 2
        cores) finds tasks deleted outright and tasks whose count differs without a newer
        `updated_at`; those are read in full too. No watermark: every task of the project.
        """
        read_at = datetime.now(UTC)
        known = {int(k): int(v) for k, v in (known_counts or {}).items()}
        tasks: dict[int, TaskRead] = {}
        if watermark is None:
            # The whole project, but by id in chunks: one export of 20k tasks can outlast any
            # sane timeout on a busy server (it took over 120 s on a loaded 2-core machine).
            listed = [
                int(task["id"])
                for page in self._task_pages(
                    project_id, filters=[], fields_all=False, include="id", page_size=5000
                )
                for task in page
            ]
            errors, newest = self._read(project_id, listed, tasks)
            return Pull(
                project_id=project_id,
                read_at=read_at,
                tasks=tasks,
                missing_task_ids=sorted(t for t in known if t not in tasks),
                watermark=newest,
                tasks_listed=len(listed),
                errors=errors,
            )
        filters = [
            {
                "filter": "filter:tasks:updated_at",
                "operator": "greater_or_equal",
                "type": "Datetime",
                "value": dm_datetime(watermark - overlap),
            }
        ]
        newest = watermark
        changed: list[int] = []
        for page in self._task_pages(
            project_id, filters=filters, fields_all=False, include=_COUNT_FIELDS, page_size=5000
        ):
            for task in page:
                changed.append(int(task["id"]))
                updated = parse_datetime(task.get("updated_at"))
                if updated is not None and (newest is None or updated > newest):
                    newest = updated
        missing: list[int] = []
        to_read = list(changed)
        if known and full_deletion_scan:
            counts: dict[int, int] = {}
            for page in self._task_pages(
                project_id, filters=[], fields_all=False, include=_COUNT_FIELDS, page_size=5000
            ):
                for task in page:
                    counts[int(task["id"])] = _count(task)
            missing = sorted(t for t in known if t not in counts)
            unchanged = set(counts) - set(changed)
            to_read += sorted(t for t in unchanged if t in known and counts[t] != known[t])
        errors = self._read(project_id, to_read, tasks)[0]
        # Listed as changed but gone by the time it was read: deleted meanwhile.
        missing += [t for t in to_read if t not in tasks and t in known and t not in missing]
        return Pull(
            project_id=project_id,
            read_at=read_at,
            tasks=tasks,
            missing_task_ids=sorted(set(missing)),
            watermark=newest,
            tasks_listed=len(changed),
            errors=errors,
        )
