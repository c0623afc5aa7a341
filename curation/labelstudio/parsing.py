"""Turn Label Studio webhook payloads and annotation results into plain dataclasses.

Nothing here raises on a bad payload: the webhook endpoint stores the raw body first and must never
lose it, so every problem comes back as a `PayloadError` (or as `Answer.problems` for a result
item we cannot read) that carries the raw input and says what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from curation.labelstudio import configs

ANNOTATION_CREATED = "ANNOTATION_CREATED"
ANNOTATIONS_CREATED = "ANNOTATIONS_CREATED"
ANNOTATION_UPDATED = "ANNOTATION_UPDATED"
ANNOTATIONS_DELETED = "ANNOTATIONS_DELETED"
TASKS_CREATED = "TASKS_CREATED"
TASKS_DELETED = "TASKS_DELETED"
# Sent by Label Studio but carrying nothing the platform stores.
IGNORED_ACTIONS = frozenset(
    {
        "PROJECT_CREATED",
        "PROJECT_UPDATED",
        "PROJECT_DELETED",
        "LABEL_LINK_CREATED",
        "LABEL_LINK_UPDATED",
        "LABEL_LINK_DELETED",
    }
)
ANNOTATION_ACTIONS = (ANNOTATION_CREATED, ANNOTATIONS_CREATED, ANNOTATION_UPDATED)
# What the platform registers its webhook for.
SUBSCRIBED_ACTIONS = (*ANNOTATION_ACTIONS, ANNOTATIONS_DELETED, TASKS_DELETED)

# The static header Label Studio sends with each webhook (it signs nothing; see services/sync).
SECRET_HEADER = "X-Platform-Webhook-Secret"

Side = Literal["left", "right", "tie"]


@dataclass(frozen=True)
class Answer:
    """What one annotation says, whatever the round kind; fields a config lacks stay None/empty."""

    aligned: bool | None = None
    alignment_rating: int | None = None
    issues: tuple[str, ...] = ()
    style_pass: bool | None = None
    style_rating: int | None = None
    preferred: Side | None = None
    problems: tuple[str, ...] = ()

    @property
    def rating(self) -> int | None:
        return self.style_rating if self.style_rating is not None else self.alignment_rating

    @property
    def is_empty(self) -> bool:
        return (
            self.aligned is None
            and self.alignment_rating is None
            and not self.issues
            and self.style_pass is None
            and self.style_rating is None
            and self.preferred is None
        )


@dataclass(frozen=True)
class AnnotationRecord:
    """One annotation as Label Studio holds it now, with the task data that carries our ids."""

    annotation_id: int
    task_id: int
    project_id: int | None
    completed_by: int | None
    was_cancelled: bool
    ground_truth: bool
    lead_time: float | None
    created_at: datetime | None
    updated_at: datetime | None
    result: list[dict[str, Any]]
    answer: Answer
    task_data: dict[str, Any] = field(default_factory=dict)
    # The annotation JSON exactly as Label Studio sent it, so the platform can keep it verbatim.
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def task_key(self) -> str | None:
        value = self.task_data.get("task_key")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class AnnotationEvent:
    """ANNOTATION_CREATED / ANNOTATION_UPDATED (one record) or ANNOTATIONS_CREATED (several)."""

    action: str
    project_id: int | None
    annotations: tuple[AnnotationRecord, ...]


@dataclass(frozen=True)
class AnnotationsDeleted:
    """Carries ids only: Label Studio sends no task, so the platform maps ids to its own rows."""

    action: str
    project_id: int | None
    annotation_ids: tuple[int, ...]


@dataclass(frozen=True)
class TasksDeleted:
    action: str
    project_id: int | None
    task_ids: tuple[int, ...]


@dataclass(frozen=True)
class TasksCreated:
    action: str
    project_id: int | None
    task_ids: tuple[int, ...]


@dataclass(frozen=True)
class IgnoredEvent:
    action: str
    project_id: int | None


@dataclass(frozen=True)
class PayloadError:
    """A payload we could not read; `raw` is exactly what arrived, so nothing is lost."""

    reason: str
    action: str | None
    raw: Any


ParsedWebhook = AnnotationEvent | AnnotationsDeleted | TasksDeleted | TasksCreated | IgnoredEvent


class _Bad(ValueError):
    """Internal: a field that is missing or has the wrong type (message names it)."""


def parse_datetime(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _Bad(f"not an ISO datetime: {value!r}") from None


def _int(container: Mapping[str, Any], key: str, where: str) -> int:
    value = container.get(key) if isinstance(container, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{where}.{key}: expected an integer id, got {value!r}")
    return value


def _optional_int(value: Any) -> int | None:
    # completed_by is an id in webhooks but may be an object in some API views.
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _yes_no(values: Sequence[str], yes: str, no: str, name: str) -> bool:
    if len(values) != 1 or values[0] not in (yes, no):
        raise _Bad(f"{name}: expected one of [{yes!r}, {no!r}], got {list(values)!r}")
    return values[0] == yes


def parse_result(result: Any) -> Answer:
    """Read an annotation's `result` list by control name (see `configs`); never raises."""
    if result is None:
        return Answer()
    if not isinstance(result, list):
        return Answer(problems=(f"result: expected a list, got {type(result).__name__}",))
    values: dict[str, Any] = {}
    problems: list[str] = []
    for index, item in enumerate(result):
        try:
            _read_item(item, values)
        except _Bad as exc:
            problems.append(f"result[{index}]: {exc}")
    return Answer(**values, problems=tuple(problems))


def _read_item(item: Any, out: dict[str, Any]) -> None:
    if not isinstance(item, Mapping):
        raise _Bad(f"expected an object, got {type(item).__name__}")
    name, kind, value = item.get("from_name"), item.get("type"), item.get("value")
    if not isinstance(value, Mapping):
        raise _Bad(f"{name}: value is missing or not an object")
    if kind == "choices":
        choices = value.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise _Bad(f"{name}: value.choices must be a list of strings")
        if name == configs.ALIGNED:
            out["aligned"] = _yes_no(choices, configs.YES, configs.NO, name)
        elif name == configs.STYLE_PASS:
            out["style_pass"] = _yes_no(choices, configs.PASS, configs.FAIL, name)
        elif name == configs.PAIRWISE:
            if len(choices) != 1 or choices[0] not in configs.PAIRWISE_CHOICES:
                raise _Bad(
                    f"{name}: expected one of {list(configs.PAIRWISE_CHOICES)}, got {choices!r}"
                )
            out["preferred"] = choices[0]
        elif name == configs.ISSUES:
            unknown = sorted(set(choices) - set(configs.ISSUE_TAGS))
            if unknown:
                raise _Bad(f"{name}: unknown issue tags {unknown}")
            out["issues"] = tuple(choices)
        else:
            raise _Bad(f"unknown choices control {name!r}")
    elif kind == "rating":
        rating = value.get("rating")
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            raise _Bad(f"{name}: value.rating must be an integer 1–5, got {rating!r}")
        if name == configs.ALIGNMENT_RATING:
            out["alignment_rating"] = rating
        elif name == configs.STYLE_RATING:
            out["style_rating"] = rating
        else:
            raise _Bad(f"unknown rating control {name!r}")
    elif kind == "pairwise":
        # Rounds pushed before the tie option used Label Studio's <Pairwise> tag.
        selected = value.get("selected")
        if selected not in ("left", "right"):
            raise _Bad(f"{name}: value.selected must be 'left' or 'right', got {selected!r}")
        out["preferred"] = selected
    else:
        raise _Bad(f"{name}: unsupported result type {kind!r}")


def annotation_record(annotation: Any, task: Mapping[str, Any] | None = None) -> AnnotationRecord:
    """Build a record from Label Studio's annotation JSON (webhook or task-list API shape).

    Raises ValueError naming the field when the annotation has no usable id or task.
    """
    if not isinstance(annotation, Mapping):
        raise _Bad(f"annotation: expected an object, got {type(annotation).__name__}")
    annotation_id = _int(annotation, "id", "annotation")
    task_id = annotation.get("task")
    if isinstance(task_id, Mapping):
        task_id = task_id.get("id")
    if not isinstance(task_id, int) and task is not None:
        task_id = task.get("id")
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise _Bad(f"annotation {annotation_id}: task id is missing")
    task_data = task.get("data") if isinstance(task, Mapping) else None
    result = annotation.get("result")
    lead_time = annotation.get("lead_time")
    return AnnotationRecord(
        annotation_id=annotation_id,
        task_id=task_id,
        project_id=_optional_int(annotation.get("project"))
        or (_optional_int(task.get("project")) if isinstance(task, Mapping) else None),
        completed_by=_optional_int(annotation.get("completed_by")),
        was_cancelled=bool(annotation.get("was_cancelled", False)),
        ground_truth=bool(annotation.get("ground_truth", False)),
        lead_time=float(lead_time) if isinstance(lead_time, int | float) else None,
        created_at=parse_datetime(annotation.get("created_at")),
        updated_at=parse_datetime(annotation.get("updated_at")),
        result=list(result) if isinstance(result, list) else [],
        answer=parse_result(result),
        task_data=dict(task_data) if isinstance(task_data, Mapping) else {},
        raw=dict(annotation),
    )


def _project_id(payload: Mapping[str, Any]) -> int | None:
    return _optional_int(payload.get("project"))


def _ids(items: Any, where: str) -> tuple[int, ...]:
    if not isinstance(items, list):
        raise _Bad(f"{where}: expected a list of {{id: ...}} objects")
    return tuple(_int(item, "id", f"{where}[{i}]") for i, item in enumerate(items))


def parse_webhook(payload: bytes | str | Mapping[str, Any]) -> ParsedWebhook | PayloadError:
    """Parse one webhook body; returns a `PayloadError` (with the raw body) instead of raising."""
    raw: Any = payload
    if isinstance(payload, bytes | str):
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return PayloadError(f"body is not JSON: {exc}", None, raw)
    if not isinstance(payload, Mapping):
        return PayloadError("body: expected a JSON object", None, raw)
    action = payload.get("action")
    if not isinstance(action, str):
        return PayloadError("action: missing or not a string", None, raw)
    try:
        return _parse_action(action, payload)
    except _Bad as exc:
        return PayloadError(f"{action}: {exc}", action, raw)


def _parse_action(action: str, payload: Mapping[str, Any]) -> ParsedWebhook | PayloadError:
    project_id = _project_id(payload)
    if action in (ANNOTATION_CREATED, ANNOTATION_UPDATED):
        task = payload.get("task")
        if not isinstance(task, Mapping):
            raise _Bad("task: missing or not an object")
        record = annotation_record(payload.get("annotation"), task)
        return AnnotationEvent(action, project_id, (record,))
    if action == ANNOTATIONS_CREATED:
        annotations, tasks = payload.get("annotation"), payload.get("task")
        if not isinstance(annotations, list):
            raise _Bad("annotation: expected a list for ANNOTATIONS_CREATED")
        tasks_by_id = {t.get("id"): t for t in tasks or [] if isinstance(t, Mapping)}
        records = tuple(
            annotation_record(a, tasks_by_id.get(a.get("task")) if isinstance(a, Mapping) else None)
            for a in annotations
        )
        return AnnotationEvent(action, project_id, records)
    if action == ANNOTATIONS_DELETED:
        return AnnotationsDeleted(
            action, project_id, _ids(payload.get("annotations"), "annotations")
        )
    if action == TASKS_DELETED:
        return TasksDeleted(action, project_id, _ids(payload.get("tasks"), "tasks"))
    if action == "TASKS_CREATED":
        return TasksCreated(action, project_id, _ids(payload.get("tasks"), "tasks"))
    if action in IGNORED_ACTIONS:
        return IgnoredEvent(action, project_id)
    return PayloadError(f"action: unknown action {action!r}", action, payload)
