"""The platform's Label Studio operations, over `label-studio-sdk` 2.1.2.

Everything here is idempotent so a job can be retried after any crash: projects are found by title,
tasks by the `task_key` in their data, webhooks by URL; accounts live in `accounts.py`. Reconcile
reads only tasks updated since a watermark (with keyset paging, so concurrent edits cannot make it skip rows)
and reports deletions by comparing with the annotation ids the caller already holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from curation.labelstudio.configs import data_keys
from curation.labelstudio.parsing import (
    SUBSCRIBED_ACTIONS,
    AnnotationRecord,
    annotation_record,
    parse_datetime,
)

TASK_KEY = "task_key"
# Label Studio's data-manager datetime filter format (data_manager/managers.py).
_DM_DATETIME = "%Y-%m-%dT%H:%M:%S.%fZ"


class LabelStudioError(RuntimeError):
    """A Label Studio call failed or answered something unexpected; the message says which."""


@dataclass(frozen=True)
class PushResult:
    """task_key -> Label Studio task id for every valid task (new and already present)."""

    task_ids: dict[str, int]
    created: int
    skipped_existing: int
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReconcileResult:
    """Current state of every annotation on tasks updated since the watermark, plus deletions.

    `watermark` is what to pass next time. Records can repeat across calls (the query overlaps
    the previous watermark on purpose), so callers upsert by `annotation_id`.
    """

    annotations: list[AnnotationRecord]
    deleted_annotation_ids: list[int]
    deleted_task_ids: list[int]
    watermark: datetime | None
    tasks_seen: int
    errors: list[str] = field(default_factory=list)


def _dm_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("watermark: must be timezone-aware (Label Studio stores UTC)")
    return value.astimezone(UTC).strftime(_DM_DATETIME)


class LabelStudioClient:
    """One Label Studio server as the platform sees it (admin token unless said otherwise)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.sdk = LabelStudio(base_url=self.base_url, api_key=api_key, timeout=timeout)

    # -- low level -------------------------------------------------------------------------

    def _get_json(self, path: str, params: Mapping[str, Any]) -> Any:
        # The SDK's typed pagers build a pydantic model per task (slow at 20k tasks and lossy for
        # fields it does not know); its own authenticated httpx client returns the raw JSON.
        response = self.sdk._client_wrapper.httpx_client.request(
            path, method="GET", params=dict(params)
        )
        if response.status_code != 200:
            shown = {
                k: (v if not isinstance(v, list) else f"<{len(v)} values>")
                for k, v in params.items()
            }
            raise LabelStudioError(
                f"GET {path} {shown} -> {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def _task_pages(
        self,
        project_id: int,
        *,
        filters: list[dict[str, Any]],
        fields_all: bool,
        include: str | None = None,
        page_size: int = 1000,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of tasks ordered by id, paging by `id > last id` (keyset).

        Offset paging over a set that changes while it is read can skip a row (a deleted task
        shifts the rest left); keyset paging cannot.
        """
        last_id = 0
        while True:
            items = [
                *filters,
                {
                    "filter": "filter:tasks:id",
                    "operator": "greater",
                    "type": "Number",
                    "value": last_id,
                },
            ]
            query = {
                "filters": {"conjunction": "and", "items": items},
                "ordering": ["tasks:id"],
            }
            params: dict[str, Any] = {
                "project": project_id,
                "page": 1,
                "page_size": page_size,
                "query": json.dumps(query),
                "fields": "all" if fields_all else "task_only",
                # Data URIs are ours (signed platform URLs); never let Label Studio rewrite them.
                "resolve_uri": "false",
            }
            if include:
                params["include"] = include
            try:
                payload = self._get_json("api/tasks/", params)
            except LabelStudioError as exc:
                if "404" in str(exc) and "Invalid page" in str(exc):
                    return
                raise
            tasks = payload.get("tasks", []) if isinstance(payload, dict) else payload
            if not tasks:
                return
            yield tasks
            if len(tasks) < page_size:
                return
            last_id = max(int(t["id"]) for t in tasks)

    # -- projects --------------------------------------------------------------------------

    def find_project(self, title: str) -> int | None:
        # `title` filters by "contains": keep only the exact match.
        projects: Iterable[Any] = self.sdk.projects.list(title=title, page_size=100)
        for project in projects:
            if project.title == title and project.id is not None:
                return int(project.id)
        return None

    def ensure_project(
        self,
        title: str,
        label_config: str,
        *,
        maximum_annotations: int = 1,
        description: str = "",
        **settings: Any,
    ) -> int:
        """Project id for `title`, creating it if absent; an existing project's config is updated."""
        if maximum_annotations < 1:
            raise ValueError("maximum_annotations: must be at least 1")
        existing = self.find_project(title)
        if existing is not None:
            current = self.sdk.projects.get(existing)
            if (
                current.label_config != label_config
                or current.maximum_annotations != maximum_annotations
            ):
                self.sdk.projects.update(
                    existing, label_config=label_config, maximum_annotations=maximum_annotations
                )
            return existing
        project = self.sdk.projects.create(
            title=title,
            label_config=label_config,
            maximum_annotations=maximum_annotations,
            description=description,
            **settings,
        )
        if project.id is None:
            raise LabelStudioError(f"creating project {title!r} returned no id")
        return int(project.id)

    def project_data_keys(self, project_id: int) -> set[str]:
        """Task data keys the project's labeling config reads (`$image`, `$prompt`, ...)."""
        return data_keys(self.sdk.projects.get(project_id).label_config or "")

    # -- tasks -----------------------------------------------------------------------------

    def existing_task_keys(self, project_id: int) -> dict[str, int]:
        """task_key -> task id for every task already in the project that carries one."""
        keys: dict[str, int] = {}
        for page in self._task_pages(
            project_id, filters=[], fields_all=False, include="id,data", page_size=5000
        ):
            for task in page:
                key = (task.get("data") or {}).get(TASK_KEY)
                if key is not None:
                    keys.setdefault(str(key), int(task["id"]))
        return keys

    def update_task_data(self, task_id: int, data: Mapping[str, Any]) -> None:
        """Replace a task's data (its media links, when a round's links were revoked)."""
        try:
            self.sdk.tasks.update(id=str(task_id), data=dict(data))
        except ApiError as exc:
            raise LabelStudioError(
                f"updating task {task_id} failed ({exc.status_code}): {str(exc.body)[:300]}"
            ) from exc

    def push_tasks(
        self,
        project_id: int,
        tasks: Iterable[Mapping[str, Any]],
        *,
        batch_size: int = 5000,
    ) -> PushResult:
        """Import tasks not yet in the project, in batches; pushing twice creates nothing new.

        Each task is `{"data": {"task_key": ..., our ids, $config variables}, "meta": {...}}`.
        Tasks that are malformed or miss a variable the labeling config reads are reported in
        `errors` and skipped: Label Studio rejects a whole import for one such task.
        """
        if batch_size < 1:
            raise ValueError("batch_size: must be at least 1")
        required = self.project_data_keys(project_id)
        errors: list[str] = []
        pending: list[dict[str, Any]] = []
        seen: set[str] = set()
        requested: set[str] = set()
        existing = self.existing_task_keys(project_id)
        skipped = 0
        for index, task in enumerate(tasks):
            problem, key = _check_task(task, required)
            if problem:
                errors.append(f"tasks[{index}]: {problem}")
                continue
            assert key is not None
            requested.add(key)
            if key in existing:
                skipped += 1
                continue
            if key in seen:
                errors.append(f"tasks[{index}]: data.task_key {key!r} repeats an earlier task")
                continue
            seen.add(key)
            entry: dict[str, Any] = {"data": dict(task["data"])}
            if task.get("meta"):
                entry["meta"] = dict(task["meta"])
            pending.append(entry)

        task_ids = dict(existing)
        created = 0
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            try:
                # Plain dicts serialise as the SDK's ImportApiRequest would, without building
                # 20k pydantic models first.
                response = self.sdk.projects.import_tasks(
                    project_id,
                    request=batch,  # type: ignore[arg-type]
                    return_task_ids=True,
                )
            except ApiError as exc:
                # Earlier batches stay imported; pushing again resumes after them.
                raise LabelStudioError(
                    f"import of {len(batch)} tasks (from {batch[0]['data'][TASK_KEY]!r}) into "
                    f"project {project_id} failed ({exc.status_code}): {str(exc.body)[:500]}"
                ) from exc
            ids = list(getattr(response, "task_ids", None) or [])
            if len(ids) != len(batch):
                # Never guess a mapping: re-read what is actually there.
                task_ids.update(self.existing_task_keys(project_id))
            else:
                # Community edition imports synchronously with one bulk insert, ids in order.
                task_ids.update(
                    {str(t["data"][TASK_KEY]): int(i) for t, i in zip(batch, ids, strict=True)}
                )
            created += int(getattr(response, "task_count", None) or len(ids))
        return PushResult(
            task_ids={k: v for k, v in task_ids.items() if k in requested},
            created=created,
            skipped_existing=skipped,
            errors=errors,
        )

    # -- hooks --------------------------------------------------------------------------

    def ensure_webhook(
        self,
        project_id: int,
        url: str,
        *,
        secret_header: str,
        secret: str,
        actions: Sequence[str] = SUBSCRIBED_ACTIONS,
    ) -> int:
        """Webhook id posting `actions` for the project to `url` with a static secret header.

        Label Studio signs nothing: the secret header is the only proof a POST came from it.
        """
        headers = {secret_header: secret}
        for hook in self.sdk.webhooks.list(project=str(project_id)):
            if hook.url == url and hook.project == project_id:
                if (hook.headers or {}) != headers or set(hook.actions or []) != set(actions):
                    self.sdk.webhooks.update(
                        hook.id,
                        url=url,
                        headers=headers,
                        actions=list(actions),
                        send_for_all_actions=False,
                        send_payload=True,
                        is_active=True,
                    )
                return int(hook.id)
        hook = self.sdk.webhooks.create(
            url=url,
            project=project_id,
            actions=list(actions),
            headers=headers,
            send_payload=True,
            send_for_all_actions=False,
            is_active=True,
        )
        return int(hook.id)

    # -- reconcile -------------------------------------------------------------------------

    def annotations_updated_since(
        self,
        project_id: int,
        watermark: datetime | None,
        *,
        known_annotation_ids: Mapping[int, int] | None = None,
        full_deletion_scan: bool = True,
        overlap: timedelta = timedelta(seconds=5),
        export_chunk: int = 500,  # Django refuses more than 1,000 query parameters
    ) -> ReconcileResult:
        """Every annotation on tasks updated at or after `watermark - overlap`, and deletions.

        Annotation create, edit and delete all bump the task's `updated_at`, so a data-manager
        query on it (`only_annotated` does not filter) finds every changed task cheaply (ids and
        counts only); their annotations are then read through the export endpoint for just
        those ids, about twice as fast as the data manager's `fields=all`. The overlap re-reads
        a few seconds so a write committed late is not missed. With `known_annotation_ids`
        ({annotation id: task id} the platform holds), ids gone from Label Studio are reported:
        on changed tasks directly, and (with `full_deletion_scan`) for tasks deleted outright or
        holding fewer annotations than known, by an id/count scan of the whole project (~12 s at
        20k tasks on 2 cores: run it on a slower schedule than the incremental pull).
        The first pull (no watermark) reads the project with one full export, the rest by id.
        """
        filters: list[dict[str, Any]] = []
        if watermark is not None:
            filters.append(
                {
                    "filter": "filter:tasks:updated_at",
                    "operator": "greater_or_equal",
                    "type": "Datetime",
                    "value": _dm_datetime(watermark - overlap),
                }
            )
        newest = watermark
        changed: dict[int, int] = {}  # task id -> annotation count (incl. skips)
        for page in self._task_pages(
            project_id, filters=filters, fields_all=False, include=_COUNT_FIELDS, page_size=5000
        ):
            for task in page:
                changed[int(task["id"])] = _annotation_count(task)
                updated = parse_datetime(task.get("updated_at"))
                if updated is not None and (newest is None or updated > newest):
                    newest = updated

        records: list[AnnotationRecord] = []
        errors: list[str] = []
        seen_tasks: dict[int, set[int]] = {task_id: set() for task_id in changed}
        to_read = [task_id for task_id, count in changed.items() if count > 0]
        if watermark is None:
            chunks: list[list[int] | None] = [None] if to_read else []
        else:
            chunks = [to_read[i : i + export_chunk] for i in range(0, len(to_read), export_chunk)]
        wanted = set(to_read)
        for chunk in chunks:
            for task in self.export_tasks(project_id, chunk):
                if int(task["id"]) not in wanted:
                    continue  # created after the listing: the next pull reads it
                task_id = int(task["id"])
                for raw in task.get("annotations") or []:
                    try:
                        record = annotation_record(raw, task)
                    except ValueError as exc:
                        errors.append(f"task {task_id}: {exc}")
                        continue
                    seen_tasks.setdefault(task_id, set()).add(record.annotation_id)
                    records.append(record)

        deleted_annotations: list[int] = []
        deleted_tasks: list[int] = []
        if known_annotation_ids:
            deleted_annotations, deleted_tasks = self._find_deletions(
                project_id, known_annotation_ids, seen_tasks, full_scan=full_deletion_scan
            )
        return ReconcileResult(
            annotations=records,
            deleted_annotation_ids=sorted(deleted_annotations),
            deleted_task_ids=sorted(deleted_tasks),
            watermark=newest,
            tasks_seen=len(changed),
            errors=errors,
        )

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

    def _find_deletions(
        self,
        project_id: int,
        known: Mapping[int, int],
        seen_tasks: Mapping[int, set[int]],
        *,
        full_scan: bool,
    ) -> tuple[list[int], list[int]]:
        by_task: dict[int, set[int]] = {}
        for annotation_id, task_id in known.items():
            by_task.setdefault(int(task_id), set()).add(int(annotation_id))
        deleted: list[int] = []
        unseen = {t for t in by_task if t not in seen_tasks}
        for task_id, ids in by_task.items():
            if task_id in seen_tasks:
                deleted.extend(ids - seen_tasks[task_id])
        if not unseen or not full_scan:
            return deleted, []
        # Tasks not in the changed set: a count scan finds deleted tasks and (rare) deletions
        # that did not bump updated_at; only tasks whose count dropped are read in full.
        counts: dict[int, int] = {}
        for page in self._task_pages(
            project_id, filters=[], fields_all=False, include=_COUNT_FIELDS, page_size=5000
        ):
            for task in page:
                counts[int(task["id"])] = _annotation_count(task)
        deleted_tasks = sorted(t for t in unseen if t not in counts)
        for task_id in deleted_tasks:
            deleted.extend(by_task[task_id])
        dropped = [t for t in unseen - set(deleted_tasks) if counts[t] < len(by_task[t])]
        for task in self.export_tasks(project_id, dropped):
            current = {int(a["id"]) for a in task.get("annotations") or []}
            deleted.extend(by_task[int(task["id"])] - current)
        return deleted, deleted_tasks


_COUNT_FIELDS = "id,updated_at,total_annotations,cancelled_annotations"


def _annotation_count(task: Mapping[str, Any]) -> int:
    return int(task.get("total_annotations") or 0) + int(task.get("cancelled_annotations") or 0)


def _check_task(task: Any, required: set[str]) -> tuple[str | None, str | None]:
    if not isinstance(task, Mapping):
        return f"expected an object with 'data', got {type(task).__name__}", None
    data = task.get("data")
    if not isinstance(data, Mapping):
        return "data: missing or not an object", None
    key = data.get(TASK_KEY)
    if not isinstance(key, str | int) or isinstance(key, bool) or str(key) == "":
        return f"data.{TASK_KEY}: missing or empty (it makes pushes idempotent)", None
    missing = sorted(required - set(data))
    if missing:
        return f"data: missing {missing} that the labeling config reads", str(key)
    meta = task.get("meta")
    if meta is not None and not isinstance(meta, Mapping):
        return "meta: not an object", str(key)
    return None, str(key)
