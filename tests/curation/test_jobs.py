"""Job lifecycle: progress, failure with backoff and retries, cancel, retry, lost workers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from curation.models import Job
from curation.services import jobs as svc


def _run(job: Job) -> Job:
    svc.execute_job(job.pk)
    job.refresh_from_db()
    return job


@pytest.fixture
def no_dispatch(monkeypatch):
    """Record what would be handed to the task backend instead of running it."""
    sent: list[tuple[int, object]] = []
    monkeypatch.setattr(svc, "dispatch", lambda pk, run_after=None: sent.append((pk, run_after)))
    return sent


@pytest.mark.django_db
def test_success_records_progress_state_and_result(
    tmp_path, no_dispatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = svc.enqueue_job("test.steps", params={"out": str(tmp_path), "steps": 4})
    assert no_dispatch == [(job.pk, None)]
    assert job.queue == "cpu"
    job = _run(job)
    assert job.status == Job.Status.SUCCEEDED
    assert job.percent == 100.0 and job.progress_total == 4
    assert job.state == {"next": 4} and job.result == {"steps": 4}
    assert job.attempt == 1 and job.finished_at is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"step-{i:03d}" for i in range(4)]


def _backoff_passes(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(retry_at=timezone.now())


@pytest.mark.django_db
def test_failure_retries_with_exponential_backoff_then_fails(
    no_dispatch, settings, django_capture_on_commit_callbacks
):
    settings.JOB_RETRY_BACKOFF_SECONDS = 10
    job = svc.enqueue_job("test.fails", max_attempts=3)
    with django_capture_on_commit_callbacks(execute=True):
        job = _run(job)
    assert job.status == Job.Status.RETRYING
    first_delay = (job.retry_at - timezone.now()).total_seconds()
    assert 8 < first_delay <= 10
    assert "planned failure on attempt 1" in job.error
    assert no_dispatch[-1][0] == job.pk and no_dispatch[-1][1] == job.retry_at
    # Delivered long before its time (a stray duplicate): it does not run early.
    job = _run(job)
    assert job.status == Job.Status.RETRYING and job.attempt == 1
    _backoff_passes(job)
    with django_capture_on_commit_callbacks(execute=True):
        job = _run(job)
    assert job.status == Job.Status.RETRYING
    assert 18 < (job.retry_at - timezone.now()).total_seconds() <= 20
    _backoff_passes(job)
    job = _run(job)
    assert job.status == Job.Status.FAILED and job.attempt == 3
    assert "attempt 3 failed" in job.log_tail


@pytest.mark.django_db
def test_a_refusal_fails_at_once_with_its_message_and_no_traceback(
    no_dispatch, django_capture_on_commit_callbacks
):
    job = svc.enqueue_job("test.refused", params={"path": "/gone"}, max_attempts=3)
    with django_capture_on_commit_callbacks(execute=True):
        job = _run(job)
    assert job.status == Job.Status.FAILED and job.attempt == 1 and job.retry_at is None
    assert job.error == "refused: input '/gone' is gone"
    assert no_dispatch == []  # no retry was dispatched


@pytest.mark.django_db
def test_cancel_queued_and_running(no_dispatch):
    queued = svc.enqueue_job("noop")
    assert svc.request_cancel(queued).status == Job.Status.CANCELLED
    assert _run(queued).status == Job.Status.CANCELLED  # a late delivery does nothing
    running = svc.enqueue_job("test.cancellable", params={"cancel_now": True})
    running = _run(running)
    assert running.status == Job.Status.CANCELLED
    assert "cancelled" in running.error


@pytest.mark.django_db
def test_retry_only_finished_jobs(no_dispatch, django_capture_on_commit_callbacks):
    job = svc.enqueue_job("test.fails", max_attempts=1)
    job = _run(job)
    assert job.status == Job.Status.FAILED
    with django_capture_on_commit_callbacks(execute=True):
        job = svc.retry_job(job)
    assert job.status == Job.Status.QUEUED and job.max_attempts == 1 + 3
    assert no_dispatch[-1] == (job.pk, None)
    with pytest.raises(svc.JobNotRetryable):
        svc.retry_job(job)


@pytest.mark.django_db
def test_unknown_kind_is_refused():
    with pytest.raises(svc.UnknownJobKind, match="no job handler named 'nope'"):
        svc.enqueue_job("nope")


@pytest.mark.django_db
def test_stale_heartbeat_requeues_then_marks_lost(no_dispatch, django_capture_on_commit_callbacks):
    stale = timezone.now() - timedelta(minutes=5)
    job = Job.objects.create(
        kind="noop", status=Job.Status.RUNNING, attempt=1, max_attempts=2, heartbeat_at=stale
    )
    fresh = Job.objects.create(
        kind="noop", status=Job.Status.RUNNING, attempt=1, heartbeat_at=timezone.now()
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert svc.recover_lost_jobs(timedelta(seconds=60)) == [job.pk]
    job.refresh_from_db()
    fresh.refresh_from_db()
    assert job.status == Job.Status.QUEUED and "worker lost" in job.error
    assert fresh.status == Job.Status.RUNNING
    assert no_dispatch == [(job.pk, None)]
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, attempt=2, heartbeat_at=stale)
    assert svc.recover_lost_jobs(timedelta(seconds=60)) == []
    job.refresh_from_db()
    assert job.status == Job.Status.LOST


@pytest.mark.django_db
def test_cancel_and_retry_through_api_and_admin(
    api_client, client, data_lead, annotator, no_dispatch
):
    job = svc.enqueue_job("test.fails", max_attempts=1)
    job = _run(job)
    api_client.force_authenticate(annotator)
    assert api_client.post(reverse("job-retry", args=[job.pk])).status_code == 403
    api_client.force_authenticate(data_lead)
    response = api_client.post(reverse("job-retry", args=[job.pk]))
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert api_client.post(reverse("job-retry", args=[job.pk])).status_code == 409
    response = api_client.post(reverse("job-cancel", args=[job.pk]))
    assert response.json()["status"] == "cancelled"
    client.force_login(data_lead)
    response = client.post(
        reverse("admin:curation_job_changelist"),
        {"action": "retry", "_selected_action": [job.pk]},
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    page = client.get(reverse("admin:curation_job_changelist"))
    assert b"%" in page.content and b"test.fails" in page.content
