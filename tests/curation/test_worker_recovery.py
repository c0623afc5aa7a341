"""Kill a real worker with SIGKILL mid-job; another worker finishes it with nothing lost.

Runs on the database backend and on RQ with a real Redis.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from curation.models import Job
from curation.services import jobs as svc
from tests.conftest import PYTHON, ROOT, subprocess_env

STEPS = 8
BLOCK_AT = 3
BACKENDS = [
    pytest.param("database", id="database"),
    pytest.param("rq", id="rq", marks=pytest.mark.redis),
]


def worker(backend: str, *extra: str, **env_extra: str) -> subprocess.Popen:
    env = subprocess_env(
        TASK_BACKEND=backend, EXTRA_JOB_HANDLER_MODULES="tests.job_handlers", **env_extra
    )
    return subprocess.Popen(
        [PYTHON, str(ROOT / "manage.py"), "worker", "--queues", "cpu", *extra],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # RQ forks a work horse per job: kill the whole group
    )


def _wait_for_fifo(path: Path, proc: subprocess.Popen, timeout: float = 120) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError(
                f"worker never reached step {BLOCK_AT}: {proc.stdout.read().decode()[-3000:]}"
            )
        data = b""
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], timeout)
            data += os.read(fd, 64)
        return data.decode().strip()
    finally:
        os.close(fd)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkilled_worker_job_is_recovered_without_loss(backend, tmp_path, request):
    if backend == "rq":
        request.getfixturevalue("clean_redis_queues")
    out = tmp_path / "out"
    out.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with override_settings(TASKS={"default": settings.TASK_BACKENDS[backend]}):
        job = svc.enqueue_job(
            "test.steps",
            params={"out": str(out), "steps": STEPS, "block_at": BLOCK_AT, "fifo": str(fifo)},
        )
        first = worker(backend)
        running_pid = int(_wait_for_fifo(fifo, first))
        # The whole machine dies: the worker's group and the process running the job (RQ's work
        # horse calls setsid(), so it is not in the worker's group).
        os.killpg(first.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(running_pid, signal.SIGKILL)
        first.wait(timeout=30)

        job.refresh_from_db()
        assert job.status == Job.Status.RUNNING  # nobody told the platform the worker died
        assert job.state == {"next": BLOCK_AT}
        assert sorted(p.name for p in out.iterdir()) == [f"step-{i:03d}" for i in range(BLOCK_AT)]

        # The scheduler does this when the heartbeat is older than JOB_STALE_AFTER.
        assert svc.recover_lost_jobs(stale_after=timedelta(0)) == [job.pk]
        second = worker(backend, "--batch")
        output, _ = second.communicate(timeout=180)
        assert second.returncode == 0, output.decode()[-3000:]

    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, (job.error, output.decode()[-3000:])
    assert job.attempt == 2 and job.percent == 100.0
    files = sorted(out.iterdir())
    assert [p.name for p in files] == [f"step-{i:03d}" for i in range(STEPS)]
    attempts = [p.read_text().split()[-1] for p in files]
    assert attempts == ["1"] * BLOCK_AT + ["2"] * (STEPS - BLOCK_AT)
