"""Captured Label Studio webhook payloads (fixtures/labelstudio) replayed through the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.models import Annotation, AnnotationRound, Job, LabelTask, WebhookEvent
from curation.services.jobs import enqueue_job, execute_job
from curation.services.rounds import create_round
from curation.services.sync import replay_pending_events

from .conftest import make_image

pytestmark = pytest.mark.django_db
FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "labelstudio"


def _payload(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture
def captured_round(db):
    """A round matching the captured project 5: tasks r7-g0 (id 31), r7-g1 (32), r7-g2 (33)."""
    round_ = create_round(
        name="captured",
        kind="alignment",
        images=[make_image(i) for i in range(3)],
        gold_rate=0,
    )
    for i, task in enumerate(round_.tasks.order_by("pk")):
        task.key, task.labelstudio_task_id = f"r7-g{i}", 31 + i
        task.save()
    AnnotationRound.objects.filter(pk=round_.pk).update(labelstudio_project_id=5, state="pushed")
    return round_


def _deliver(name: str, payload: dict | None = None) -> dict:
    event = WebhookEvent.objects.create(
        action=(payload or _payload(name)).get("action", ""), payload=payload or _payload(name)
    )
    job = enqueue_job("labelstudio.webhook", params={"event_id": event.pk})
    execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    event.refresh_from_db()
    assert event.processed_at is not None
    return {"event": event, "result": job.result}


def test_created_updated_deleted_replayed_in_order(captured_round, make_annotators):
    first = _deliver("annotation_created")
    assert first["event"].error == "" and first["result"]["created"] == 1
    a1 = Annotation.objects.get(labelstudio_id=1)
    assert a1.task.key == "r7-g0" and a1.aligned is True and a1.rating == 4
    assert a1.labelstudio_user_id == 2 and a1.annotator is None  # no platform account: uncounted
    assert a1.raw == _payload("annotation_created")["annotation"]
    captured_round.refresh_from_db()
    assert captured_round.state == "annotating"

    _deliver("annotation_created_with_issues")
    a2 = Annotation.objects.get(labelstudio_id=2)
    assert a2.aligned is False and a2.issues == ["wrong count", "other"]

    _deliver("annotation_updated")
    a1.refresh_from_db()
    assert a1.aligned is False and a1.rating is None

    # A late duplicate of the creation (older updated_at) must not undo the edit.
    late = _deliver("annotation_created")
    assert late["result"]["stale"] == 1
    a1.refresh_from_db()
    assert a1.aligned is False

    _deliver("annotations_deleted")
    a2.refresh_from_db()
    assert a2.deleted
    # An update of an already deleted annotation arriving late does not resurrect it.
    resurrect = _payload("annotation_created_with_issues")
    resurrect["action"] = "ANNOTATION_UPDATED"
    resurrect["annotation"]["updated_at"] = "2030-01-01T00:00:00Z"
    _deliver("x", resurrect)
    a2.refresh_from_db()
    assert a2.deleted

    tasks_deleted = _deliver("tasks_deleted")
    assert tasks_deleted["result"]["tasks_deleted"] == 1
    assert LabelTask.objects.get(round=captured_round, key="r7-g2").labelstudio_task_id is None
    assert Annotation.objects.count() == 2  # nothing is ever removed from the platform


def test_unknown_projects_and_garbage_are_kept_with_an_error(captured_round):
    style = _deliver("style_annotation_created")  # project 6 is no round here
    assert "project 6 belongs to no round" in style["event"].error
    garbage = _deliver("x", {"action": "ANNOTATION_CREATED", "annotation": {"id": "nope"}})
    assert "unreadable payload" in garbage["event"].error
    unparsed = _deliver("x", {"unparsed_body": "{not json"})
    assert "action" in unparsed["event"].error
    assert WebhookEvent.objects.count() == 3 and not Annotation.objects.exists()


def test_unknown_task_is_reported_not_fatal(captured_round):
    payload = _payload("annotation_created")
    payload["task"]["data"]["task_key"] = "not-ours"
    payload["task"]["id"] = payload["annotation"]["task"] = 999
    outcome = _deliver("x", payload)
    assert "task 999" in outcome["event"].error and "not in round" in outcome["event"].error


def test_events_whose_job_never_ran_are_replayed(captured_round):
    for name in ("annotation_created", "annotation_created_with_issues", "annotations_deleted"):
        WebhookEvent.objects.create(action="x", payload=_payload(name))
    WebhookEvent.objects.update(received_at="2020-01-01T00:00:00Z")
    assert replay_pending_events() == 3
    assert set(Annotation.objects.values_list("labelstudio_id", "deleted")) == {
        (1, False),
        (2, True),
    }
    assert not WebhookEvent.objects.filter(processed_at__isnull=True).exists()
