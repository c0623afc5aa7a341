"""Retries fire with backoff on a real worker of each backend, and stranded jobs are resent.

No dispatch is mocked in the retry test: the job goes through the task backend (RQ on a real
Redis, or the database backend) to a `manage.py worker` process, fails, is scheduled again with
backoff by the worker itself, and is run again by that worker (RQ: by its scheduler).
"""

from __future__ import annotations

import os
import select
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from django_tasks_db.models import DBTaskResult

from curation.models import Job
from curation.services import jobs as svc
from curation.services.schedules import scheduler_tick
from tests.curation.test_worker_recovery import BACKENDS, worker

BACKOFF_SECONDS = 2


def _read_fifo(path: Path, proc, timeout: float = 150) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = b""
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"no word from the worker: {proc.stdout.read()[-3000:]!r}")
            data += os.read(fd, 64)
        return data.decode().strip()
    finally:
        os.close(fd)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_job_is_retried_after_backoff_by_a_real_worker(backend, tmp_path, request):
    if backend == "rq":
        request.getfixturevalue("clean_redis_queues")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with override_settings(TASKS={"default": settings.TASK_BACKENDS[backend]}):
        proc = worker(backend, JOB_RETRY_BACKOFF_SECONDS=str(BACKOFF_SECONDS))
        try:
            job = svc.enqueue_job("test.flaky", params={"fifo": str(fifo)}, max_attempts=3)
            assert _read_fifo(fifo, proc) == "attempt 2"
        finally:
            proc.send_signal(signal.SIGTERM)  # warm shutdown: the running attempt finishes
            output, _ = proc.communicate(timeout=60)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, (job.error, output.decode()[-3000:])
    assert job.attempt == 2 and job.result == {"succeeded_on": 2}
    assert "planned transient failure on attempt 1" in job.log_tail
    # The second attempt started only once the backoff had passed.
    assert job.retry_at is not None and job.started_at >= job.retry_at
    assert "attempt 1 failed" in job.log_tail


@pytest.mark.django_db(transaction=True)
def test_job_whose_dispatch_failed_is_dispatched_by_the_recovery_pass(monkeypatch, caplog):
    class RedisDown:
        def using(self, **kwargs):
            return self

        def enqueue(self, *args):
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(svc, "runner", lambda: RedisDown())
    job = svc.enqueue_job("noop")  # commits, then the dispatch fails: not an error to the caller
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.dispatched_at is None
    assert "could not be handed to the task backend" in caplog.text
    assert svc.redispatch_stranded_jobs(grace=timedelta(0)) == []  # still down: tried, kept
    monkeypatch.undo()

    with override_settings(JOB_DISPATCH_GRACE_SECONDS=0):
        counts = scheduler_tick()
    assert counts["redispatched"] == 1
    job.refresh_from_db()
    assert job.dispatched_at is not None
    task = DBTaskResult.objects.get(id=job.task_result_id)
    assert task.args_kwargs["args"] == [job.pk]
    proc = worker("database", "--queues", "default", "--batch")
    output, _ = proc.communicate(timeout=120)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, output.decode()[-3000:]
    # Once dispatched and pending, the recovery pass leaves a job alone.
    queued = svc.enqueue_job("noop")
    assert svc.redispatch_stranded_jobs(grace=timedelta(0)) == []
    queued.refresh_from_db()
    assert DBTaskResult.objects.filter(args_kwargs__args=[queued.pk]).count() == 1


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_job_lost_by_redis_is_dispatched_again(clean_redis_queues):
    import django_rq

    with override_settings(TASKS={"default": settings.TASK_BACKENDS["rq"]}):
        job = svc.enqueue_job("noop")
        job.refresh_from_db()
        first = job.task_result_id
        assert first and svc.redispatch_stranded_jobs(grace=timedelta(0)) == []  # live
        django_rq.get_connection("default").flushdb()  # Redis restarted without persistence
        assert svc.redispatch_stranded_jobs(grace=timedelta(0)) == [job.pk]
        job.refresh_from_db()
        assert job.task_result_id != first
        assert django_rq.get_queue("default").fetch_job(job.task_result_id) is not None


@pytest.mark.django_db(transaction=True)
def test_overdue_delayed_retry_is_dispatched_again_once():
    """A retry whose delayed task nobody moved (RQ's scheduler died) is resent, once."""
    from django.utils import timezone

    job = svc.enqueue_job("noop")
    due = timezone.now() - timedelta(minutes=5)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RETRYING, retry_at=due)
    svc.dispatch(job.pk, run_after=due)
    Job.objects.filter(pk=job.pk).update(dispatched_at=due)
    assert svc.redispatch_stranded_jobs(grace=timedelta(seconds=30)) == [job.pk]
    tasks = DBTaskResult.objects.filter(args_kwargs__args=[job.pk])
    assert tasks.count() == 3  # enqueue, the delayed retry, the resend
    Job.objects.filter(pk=job.pk).update(dispatched_at=due)  # even once its grace has passed
    assert svc.redispatch_stranded_jobs(grace=timedelta(seconds=30)) == []
