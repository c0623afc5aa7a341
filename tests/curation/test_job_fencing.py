"""Fencing: a superseded attempt can write nothing, and only one attempt of a job completes.

The attempts here run in this process (one in a thread where two must overlap), against the
test database; the heartbeat thread is real, only its database write is made to fail.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from curation.models import Job
from curation.services import job_context
from curation.services import jobs as svc
from tests import job_handlers


@pytest.fixture(autouse=True)
def fresh_events():
    job_handlers.EVENTS.clear()
    yield
    job_handlers.event("release").set()  # never leave a thread waiting
    job_handlers.EVENTS.clear()


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """Dispatches are recorded, not sent: the test runs each attempt itself."""
    calls: list[int] = []
    monkeypatch.setattr(svc, "dispatch", lambda pk, run_after=None: calls.append(pk))
    return calls


def _attempt_in_thread(job: Job) -> threading.Thread:
    thread = threading.Thread(target=svc.execute_job, args=(job.pk,), daemon=True)
    thread.start()
    assert job_handlers.event("started").wait(30), "attempt 1 never started"
    return thread


@pytest.mark.django_db
def test_superseded_attempt_finish_and_writes_are_refused(sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = svc.enqueue_job(
            "test.fenced", params={"supersede_inline": True, "finish_anyway": True}
        )
        svc.execute_job(job.pk)  # attempt 1 is presumed lost mid-run, then returns a result
    job.refresh_from_db()
    # Its finish was refused: the job waits for the attempt that replaced it.
    assert job.status == Job.Status.QUEUED and job.attempt == 1
    assert job.attempt_token == "" and job.result == {} and job.finished_at is None
    assert "worker lost" in job.error
    assert sent == [job.pk, job.pk]  # first dispatch, then the recovery's
    svc.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempt == 2
    assert job.result == {"finished_by": 2} and job.state == {"step_done_by": 2}


@pytest.mark.django_db
def test_superseded_attempt_stops_at_its_first_fenced_write(sent):
    job = svc.enqueue_job("test.fenced", params={"supersede_inline": True})
    svc.execute_job(job.pk)
    job.refresh_from_db()
    # Its fenced step raised AttemptStopped: no state, no progress, no outcome recorded.
    assert job.status == Job.Status.QUEUED and job.state == {} and job.progress_done == 0
    assert job.result == {} and job.finished_at is None


@pytest.mark.django_db
def test_fence_refuses_a_stale_token_and_rolls_back(sent):
    from django.db import transaction

    job = svc.enqueue_job("noop")
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, attempt=1, attempt_token="a")
    ctx = svc.JobContext(job=Job.objects.get(pk=job.pk))
    assert ctx.is_current() and ctx.attempt_token == "a"
    Job.objects.filter(pk=job.pk).update(attempt_token="b")  # another attempt owns it now
    with pytest.raises(svc.AttemptStopped, match="superseded"), transaction.atomic():
        job.params = {"written": "by a stale attempt"}
        job.save(update_fields=["params"])
        ctx.fence()
    job.refresh_from_db()
    assert job.params == {} and not ctx.is_current() and ctx.should_cancel()


@pytest.mark.django_db(transaction=True)
def test_lost_heartbeat_stops_the_run_and_only_the_next_attempt_completes(monkeypatch, settings):
    settings.JOB_HEARTBEAT_SECONDS = 0.05
    settings.JOB_HEARTBEAT_GIVE_UP_SECONDS = 0.3
    sent: list[int] = []
    monkeypatch.setattr(svc, "dispatch", lambda pk, run_after=None: sent.append(pk))

    def locked(ctx):
        raise OperationalError("database is locked")

    monkeypatch.setattr(job_context, "_beat", locked)
    job = svc.enqueue_job("test.fenced", params={"stop_when_told": True})
    first = _attempt_in_thread(job)
    first.join(30)
    assert not first.is_alive(), "attempt 1 did not stop after losing its heartbeat"
    job.refresh_from_db()
    # It stopped on its own and gave the job back; it completed nothing.
    assert job.status == Job.Status.QUEUED and job.attempt == 1 and job.result == {}
    assert "could not record a heartbeat" in job.error and "database is locked" in job.error
    assert sent == [job.pk, job.pk]
    monkeypatch.undo()
    settings.JOB_HEARTBEAT_SECONDS = 600
    svc.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempt == 2
    assert job.result == {"finished_by": 2}


@pytest.mark.django_db(transaction=True)
def test_slow_attempt_overtaken_by_recovery_cannot_complete_a_second_time(monkeypatch, settings):
    """The case the fence exists for: the first run is alive but silent, the scheduler requeues
    the job, a second run completes it, then the first run wakes up and tries to finish."""
    settings.JOB_HEARTBEAT_SECONDS = 0.05
    settings.JOB_HEARTBEAT_GIVE_UP_SECONDS = 60  # it does not notice in time
    monkeypatch.setattr(svc, "dispatch", lambda pk, run_after=None: None)
    monkeypatch.setattr(
        job_context, "_beat", lambda ctx: (_ for _ in ()).throw(OperationalError("locked"))
    )
    job = svc.enqueue_job("test.fenced", params={"finish_anyway": True})
    first = _attempt_in_thread(job)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert svc.recover_lost_jobs(stale_after=timedelta(seconds=60)) == [job.pk]
    svc.execute_job(job.pk)  # attempt 2, while attempt 1 is still running
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempt == 2
    finished_at = job.finished_at
    job_handlers.event("release").set()
    first.join(30)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.result == {"finished_by": 2}
    assert job.finished_at == finished_at and job.attempt == 2


@pytest.mark.django_db(transaction=True)
def test_heartbeat_survives_transient_database_errors(monkeypatch, settings):
    settings.JOB_HEARTBEAT_SECONDS = 0.05
    settings.JOB_HEARTBEAT_GIVE_UP_SECONDS = 30
    monkeypatch.setattr(svc, "dispatch", lambda pk, run_after=None: None)
    real_beat = job_context._beat
    calls = {"failed": 0, "ok": 0}

    def flaky(ctx):
        if calls["failed"] < 3:
            calls["failed"] += 1
            raise OperationalError("database is locked")
        result = real_beat(ctx)
        calls["ok"] += 1
        if calls["ok"] >= 2:
            job_handlers.event("release").set()
        return result

    monkeypatch.setattr(job_context, "_beat", flaky)
    job = svc.enqueue_job("test.fenced", params={"stop_when_told": True})
    before = timezone.now()
    first = _attempt_in_thread(job)
    first.join(30)
    job.refresh_from_db()
    assert calls == {"failed": 3, "ok": calls["ok"]} and calls["ok"] >= 2
    assert job.status == Job.Status.SUCCEEDED and job.attempt == 1
    assert job.heartbeat_at > before
