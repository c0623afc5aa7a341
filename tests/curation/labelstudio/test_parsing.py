"""Replay webhook payloads captured from a real Label Studio 1.23.2 (fixtures/labelstudio/).

The fixtures are rewritten by test_labelstudio_server.py with LABELSTUDIO_WRITE_FIXTURES=1, so
assertions here rely on the task data and results the capture used, never on server ids.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from curation.labelstudio.parsing import (
    AnnotationEvent,
    AnnotationsDeleted,
    Answer,
    IgnoredEvent,
    PayloadError,
    TasksCreated,
    TasksDeleted,
    annotation_record,
    parse_result,
    parse_webhook,
)

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "labelstudio"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_annotation_created_carries_our_ids_and_the_judgement() -> None:
    payload = load("annotation_created")
    event = parse_webhook(json.dumps(payload).encode())
    assert isinstance(event, AnnotationEvent)
    assert event.action == "ANNOTATION_CREATED"
    assert event.project_id == payload["project"]["id"]
    (record,) = event.annotations
    assert record.annotation_id == payload["annotation"]["id"]
    assert record.task_id == payload["task"]["id"]
    assert record.task_key == "r7-g0"
    assert record.task_data["generation_id"] == 1000 and record.task_data["round_id"] == 7
    assert isinstance(record.completed_by, int)
    assert record.answer == Answer(aligned=True, alignment_rating=4)
    assert record.lead_time == 2.5
    assert record.created_at is not None and record.created_at.tzinfo is not None
    assert record.created_at.astimezone(UTC) <= record.updated_at.astimezone(UTC)
    assert record.result == payload["annotation"]["result"]


def test_issue_tags_and_a_no() -> None:
    event = parse_webhook(load("annotation_created_with_issues"))
    assert isinstance(event, AnnotationEvent)
    answer = event.annotations[0].answer
    assert answer.aligned is False
    assert answer.issues == ("wrong count", "other")
    assert answer.alignment_rating is None and answer.problems == ()


def test_update_replaces_the_result() -> None:
    event = parse_webhook(load("annotation_updated"))
    assert isinstance(event, AnnotationEvent) and event.action == "ANNOTATION_UPDATED"
    record = event.annotations[0]
    assert record.answer == Answer(aligned=False)
    assert record.updated_at > record.created_at


def test_annotations_deleted_has_ids_and_project_but_no_task() -> None:
    payload = load("annotations_deleted")
    assert "task" not in payload
    event = parse_webhook(payload)
    assert event == AnnotationsDeleted(
        "ANNOTATIONS_DELETED", payload["project"]["id"], (payload["annotations"][0]["id"],)
    )


def test_tasks_deleted() -> None:
    payload = load("tasks_deleted")
    event = parse_webhook(payload)
    assert isinstance(event, TasksDeleted)
    assert event.task_ids == tuple(t["id"] for t in payload["tasks"])


def test_style_and_pairwise() -> None:
    style = parse_webhook(load("style_annotation_created"))
    pair = parse_webhook(load("pairwise_annotation_created"))
    assert isinstance(style, AnnotationEvent) and isinstance(pair, AnnotationEvent)
    assert style.annotations[0].answer == Answer(style_pass=True, style_rating=5)
    assert style.annotations[0].answer.rating == 5
    assert style.annotations[0].task_data["exemplars"][0].endswith("e1.png")
    assert pair.annotations[0].answer == Answer(preferred="right")
    assert pair.annotations[0].task_data["checkpoint_a"] == 1


def test_bulk_annotations_created_pairs_each_annotation_with_its_task() -> None:
    # ANNOTATIONS_CREATED is only sent by a data-manager action, so it is built from the
    # captured single-annotation shape (a list under the same keys).
    one, two = load("annotation_created"), load("annotation_created_with_issues")
    bulk = {
        "action": "ANNOTATIONS_CREATED",
        "project": one["project"],
        "annotation": [one["annotation"], two["annotation"]],
        "task": [one["task"], two["task"]],
    }
    event = parse_webhook(bulk)
    assert isinstance(event, AnnotationEvent) and len(event.annotations) == 2
    assert [r.answer.aligned for r in event.annotations] == [True, False]
    assert all(r.task_key == "r7-g0" for r in event.annotations)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        ({"annotation": {}}, "action: missing"),
        ({"action": "SOMETHING_NEW", "x": 1}, "unknown action 'SOMETHING_NEW'"),
        ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1}}, "task: missing"),
        ({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "7"}]}, "annotations[0].id"),
        ({"action": "TASKS_DELETED", "tasks": None}, "tasks: expected a list"),
    ],
)
def test_bad_payloads_become_errors_that_keep_the_raw_body(body: Any, reason: str) -> None:
    result = parse_webhook(body)
    assert isinstance(result, PayloadError)
    assert reason in result.reason
    assert result.raw == body


def test_annotation_without_id_is_an_error_naming_the_field() -> None:
    payload = copy.deepcopy(load("annotation_created"))
    del payload["annotation"]["id"]
    result = parse_webhook(payload)
    assert isinstance(result, PayloadError) and "annotation.id" in result.reason
    assert result.raw["task"]["data"]["task_key"] == "r7-g0"


def test_other_known_actions_are_ignored_not_errors() -> None:
    assert parse_webhook({"action": "PROJECT_UPDATED", "project": {"id": 3}}) == IgnoredEvent(
        "PROJECT_UPDATED", 3
    )
    assert parse_webhook({"action": "TASKS_CREATED", "tasks": [{"id": 4}]}) == TasksCreated(
        "TASKS_CREATED", None, (4,)
    )


def test_unreadable_result_items_are_problems_not_exceptions() -> None:
    answer = parse_result(
        [
            {"from_name": "aligned", "type": "choices", "value": {"choices": ["yes"]}},
            {"from_name": "alignment_rating", "type": "rating", "value": {"rating": 9}},
            {"from_name": "issues", "type": "choices", "value": {"choices": ["blurry"]}},
            {"from_name": "mystery", "type": "textarea", "value": {"text": ["hi"]}},
            {"from_name": "preference", "type": "pairwise", "value": {"selected": "middle"}},
            "junk",
        ]
    )
    assert answer.aligned is True  # the good item still counts
    assert answer.alignment_rating is None and answer.issues == ()
    assert len(answer.problems) == 5
    assert answer.problems[0].startswith("result[1]: alignment_rating")
    assert "'blurry'" in answer.problems[1]
    assert "textarea" in answer.problems[2]
    assert "middle" in answer.problems[3]
    assert parse_result("oops").problems == ("result: expected a list, got str",)
    assert parse_result(None).is_empty


def test_two_choices_for_a_single_choice_control_is_a_problem() -> None:
    answer = parse_result(
        [{"from_name": "aligned", "type": "choices", "value": {"choices": ["yes", "no"]}}]
    )
    assert answer.aligned is None and "expected one of" in answer.problems[0]


def test_annotation_record_from_the_task_list_api_shape() -> None:
    # The data-manager task list nests annotations in the task, with completed_by as an id.
    task = {"id": 9, "project": 2, "data": {"task_key": "k9"}}
    record = annotation_record(
        {"id": 3, "task": 9, "completed_by": {"id": 4}, "result": [], "created_at": None}, task
    )
    assert (record.task_id, record.project_id, record.completed_by) == (9, 2, 4)
    assert record.task_key == "k9" and record.answer.is_empty
    with pytest.raises(ValueError, match="task id is missing"):
        annotation_record({"id": 3, "result": []})


def test_pairwise_choice_with_tie_and_the_older_pairwise_tag() -> None:
    def choice(values: list[str]) -> list[dict]:
        return [{"from_name": "preference", "type": "choices", "value": {"choices": values}}]

    assert parse_result(choice(["tie"])) == Answer(preferred="tie")
    assert parse_result(choice(["left"])).preferred == "left"
    bad = parse_result(choice(["A is better"]))
    assert bad.preferred is None and "'A is better'" in bad.problems[0]
    assert len(parse_result(choice(["left", "right"])).problems) == 1
    old = [{"from_name": "preference", "type": "pairwise", "value": {"selected": "right"}}]
    assert parse_result(old) == Answer(preferred="right")
