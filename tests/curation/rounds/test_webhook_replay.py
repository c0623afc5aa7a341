"""Captured Label Studio webhook payloads (fixtures/labelstudio) replayed through the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.models import Annotation, AnnotationRound, Job, LabelTask, WebhookEvent
from curation.services.jobs import enqueue_job, execute_job
from curation.services.rounds.create import create_round
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


def test_a_webhook_only_names_tasks_and_its_body_is_never_stored(captured_round):
    """Captured payloads of each kind name Label Studio tasks; nothing of the body is kept
    as an annotation (the platform reads the named tasks from Label Studio itself)."""
    from curation.labelstudio.parsing import parse_webhook
    from curation.services.sync import hinted_task_ids

    created = parse_webhook(_payload("annotation_created"))
    assert hinted_task_ids(created, captured_round) == ([31], [])
    forged = _payload("annotation_created")
    forged["annotation"]["task"] = forged["task"]["id"] = 4242
    forged["task"]["data"]["task_key"] = "r7-g0"  # task data claims to be ours: ignored
    assert hinted_task_ids(parse_webhook(forged), captured_round) == ([], [4242])
    tasks_deleted = parse_webhook(_payload("tasks_deleted"))
    assert hinted_task_ids(tasks_deleted, captured_round) == ([33], [])
    # Deletions carry annotation ids only: they name the tasks the platform holds them on.
    deleted = parse_webhook(_payload("annotations_deleted"))
    assert hinted_task_ids(deleted, captured_round) == ([], [])
    task = LabelTask.objects.get(round=captured_round, key="r7-g0")
    Annotation.objects.create(
        task=task,
        labelstudio_id=deleted.annotation_ids[0],
        labelstudio_task_id=31,
        raw={},
    )
    assert hinted_task_ids(deleted, captured_round) == ([31], [])


def test_forged_event_for_a_task_that_is_not_ours_reads_and_stores_nothing(captured_round):
    forged = _payload("annotation_created")
    forged["annotation"]["task"] = forged["task"]["id"] = 4242
    outcome = _deliver("x", forged)
    assert "task 4242 is not one of round" in outcome["event"].error
    assert not Annotation.objects.exists()


def test_unknown_projects_and_garbage_are_kept_with_an_error(captured_round):
    style = _deliver("style_annotation_created")  # project 6 is no round here
    assert "project 6 belongs to no round" in style["event"].error
    garbage = _deliver("x", {"action": "ANNOTATION_CREATED", "annotation": {"id": "nope"}})
    assert "unreadable payload" in garbage["event"].error
    unparsed = _deliver("x", {"unparsed_body": "{not json"})
    assert "action" in unparsed["event"].error
    assert WebhookEvent.objects.count() == 3 and not Annotation.objects.exists()


def test_events_whose_job_never_ran_are_replayed(captured_round):
    tasks_created = {"action": "TASKS_CREATED", "project": 5, "tasks": [{"id": 34}]}
    for payload in (_payload("style_annotation_created"), tasks_created):
        WebhookEvent.objects.create(action=payload["action"], payload=payload)
    WebhookEvent.objects.update(received_at="2020-01-01T00:00:00Z")
    assert replay_pending_events() == 2
    assert not WebhookEvent.objects.filter(processed_at__isnull=True).exists()
    assert not Annotation.objects.exists()
