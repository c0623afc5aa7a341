"""Projects, tasks and webhooks in Label Studio: find or create, push idempotently.

Projects are found by exact title and webhooks by URL. Tasks are matched first by the task ids
the platform stored when it pushed them (task data can be edited by anyone in Label Studio, so
the `task_key` in it is only used to resume a push that was interrupted before ids were stored).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from label_studio_sdk.core.api_error import ApiError

from curation.labelstudio.base import TASK_KEY, LabelStudioBase, LabelStudioError
from curation.labelstudio.configs import data_keys
from curation.labelstudio.parsing import SUBSCRIBED_ACTIONS


@dataclass(frozen=True)
class PushResult:
    """task_key -> Label Studio task id for every valid task (new and already present).

    `replaced` names the keys whose stored task id no longer exists in the project (deleted in
    Label Studio) and that were imported again, with the id they had.
    """

    task_ids: dict[str, int]
    created: int
    skipped_existing: int
    errors: list[str] = field(default_factory=list)
    adopted: int = 0
    replaced: dict[str, int] = field(default_factory=dict)


class ProjectsMixin(LabelStudioBase):
    def find_project(self, title: str) -> int | None:
        # `title` filters by "contains": keep only the exact match.
        projects: Iterable[Any] = self.sdk.projects.list(title=title, page_size=100)
        for project in projects:
            if project.title == title and project.id is not None:
                return int(project.id)
        return None

    def project_exists(self, project_id: int) -> bool:
        try:
            self.sdk.projects.get(project_id)
        except ApiError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

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

    def project_tasks(self, project_id: int) -> dict[int, str | None]:
        """Every task id in the project with the `task_key` its data carries now (or None)."""
        found: dict[int, str | None] = {}
        for page in self._task_pages(
            project_id, filters=[], fields_all=False, include="id,data", page_size=5000
        ):
            for task in page:
                key = (task.get("data") or {}).get(TASK_KEY)
                found[int(task["id"])] = str(key) if key is not None else None
        return found

    def existing_task_keys(self, project_id: int) -> dict[str, int]:
        """task_key -> task id for every task already in the project that carries one."""
        keys: dict[str, int] = {}
        for task_id, key in sorted(self.project_tasks(project_id).items()):
            if key is not None:
                keys.setdefault(key, task_id)
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
        mapped: Mapping[str, int] | None = None,
        batch_size: int = 5000,
    ) -> PushResult:
        """Import tasks not yet in the project, in batches; pushing twice creates nothing new.

        Each task is `{"data": {"task_key": ..., our ids, $config variables}, "meta": {...}}`.
        `mapped` is the caller's stored task_key -> task id: a key whose id is still in the
        project is there; a key whose id is gone is imported again (reported in `replaced`);
        an unmapped key adopts a task whose data carries it, unless that task is mapped to
        another key (so an edited `task_key` never moves a task). Tasks that are malformed or
        miss a variable the labeling config reads are reported in `errors` and skipped: Label
        Studio rejects a whole import for one such task.
        """
        if batch_size < 1:
            raise ValueError("batch_size: must be at least 1")
        mapped = dict(mapped or {})
        required = self.project_data_keys(project_id)
        present = self.project_tasks(project_id)
        claimed = {task_id for task_id in mapped.values() if task_id in present}
        by_data_key: dict[str, int] = {}
        for task_id, key in sorted(present.items()):
            if key is not None and task_id not in claimed:
                by_data_key.setdefault(key, task_id)
        errors: list[str] = []
        pending: list[dict[str, Any]] = []
        seen: set[str] = set()
        task_ids: dict[str, int] = {}
        replaced: dict[str, int] = {}
        skipped = adopted = 0
        for index, task in enumerate(tasks):
            problem, key = _check_task(task, required)
            if problem:
                errors.append(f"tasks[{index}]: {problem}")
                continue
            assert key is not None
            if key in seen:
                errors.append(f"tasks[{index}]: data.task_key {key!r} repeats an earlier task")
                continue
            seen.add(key)
            stored = mapped.get(key)
            if stored is not None and stored in present:
                task_ids[key] = stored
                skipped += 1
                continue
            if stored is None and key in by_data_key:
                task_ids[key] = by_data_key.pop(key)
                adopted += 1
                continue
            if stored is not None:
                replaced[key] = stored
            entry: dict[str, Any] = {"data": dict(task["data"])}
            if task.get("meta"):
                entry["meta"] = dict(task["meta"])
            pending.append(entry)

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
                # Never guess a mapping: re-read what is actually there (new ids only).
                now = self.project_tasks(project_id)
                fresh = {k: i for i, k in sorted(now.items()) if i not in present and k}
                task_ids.update(
                    {str(t["data"][TASK_KEY]): fresh[str(t["data"][TASK_KEY])] for t in batch}
                )
            else:
                # Community edition imports synchronously with one bulk insert, ids in order.
                task_ids.update(
                    {str(t["data"][TASK_KEY]): int(i) for t, i in zip(batch, ids, strict=True)}
                )
            created += int(getattr(response, "task_count", None) or len(ids))
        return PushResult(
            task_ids=task_ids,
            created=created,
            skipped_existing=skipped,
            errors=errors,
            adopted=adopted,
            replaced=replaced,
        )

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

        Label Studio signs nothing and every member of its organization can read the header,
        so the platform treats what arrives as a hint only (see `services/sync.py`).
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
