"""Make django-tasks-rq's failure callback survive RQ's clean-up of a dead worker's job.

When a worker dies, RQ later moves its job to the failed registry from code paths (the
django_rq dashboard's statistics, another worker's maintenance) that load the job with RQ's
plain Job class. django_tasks_rq's callback then reads `job.task_result`, which only its own Job
class has, and the request or the worker's maintenance crashes. The platform's Job row already
records the loss (stale heartbeat), so the callback can skip such jobs. RQ resolves callbacks by
dotted path at call time, so replacing the module attribute is enough.
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    from django_tasks_rq import backend

    original = backend.failed_callback
    if getattr(original, "_platform_guarded", False):
        return

    def failed_callback(job: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(job, backend.Job):
            return
        original(job, *args, **kwargs)

    failed_callback._platform_guarded = True  # type: ignore[attr-defined]
    backend.failed_callback = failed_callback
