"""Make django-tasks-rq's callbacks survive RQ jobs that a dead worker or Redis left behind.

- When a worker dies, RQ later moves its job to the failed registry from code paths (the
  django_rq dashboard's statistics, another worker's maintenance) that load the job with RQ's
  plain Job class. django_tasks_rq's failure callback then reads `job.task_result`, which only
  its own Job class has, and the request or the worker's maintenance crashes.
- When Redis restarts without persistence while a job runs, the job's hash is gone by the time
  it ends: both callbacks read its status through `job.task_result` and raise
  InvalidJobOperation.

The platform's Job row already records each outcome (and the loss, by a stale heartbeat), so the
callbacks skip such jobs. RQ stores a callback as the dotted path of the function it was given
and imports it when the callback runs, so the replacements are module-level functions here: a
closure would be stored as `...install.<locals>...`, which no worker can import.
"""

from __future__ import annotations

from typing import Any

_ORIGINALS: dict[str, Any] = {}


def _backend() -> Any:
    from django_tasks_rq import backend

    if not _ORIGINALS:
        install()
    return backend


def _gone(job: Any) -> bool:
    """The job's hash is no longer in Redis (restarted without persistence, or expired)."""
    return not job.connection.exists(job.key)


def failed_callback(job: Any, *args: Any, **kwargs: Any) -> None:
    backend = _backend()
    if not isinstance(job, backend.Job) or _gone(job):
        return
    _ORIGINALS["failed"](job, *args, **kwargs)


def success_callback(job: Any, *args: Any, **kwargs: Any) -> None:
    backend = _backend()
    if not isinstance(job, backend.Job) or _gone(job):
        return
    _ORIGINALS["success"](job, *args, **kwargs)


def install() -> None:
    from django_tasks_rq import backend

    if backend.failed_callback is not failed_callback:
        _ORIGINALS["failed"] = backend.failed_callback
        backend.failed_callback = failed_callback
    if backend.success_callback is not success_callback:
        _ORIGINALS["success"] = backend.success_callback
        backend.success_callback = success_callback
