"""Writes for jobs: enqueue, run with heartbeat and progress, cancel, retry, recover lost jobs.

The django-tasks task only carries a Job id (curation.tasks.run_job). Everything the user sees
lives on the Job row, so a dead worker, a retry or another backend never loses it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from curation.models import Job

logger = logging.getLogger(__name__)

Handler = Callable[["JobContext"], dict | None]
_HANDLERS: dict[str, tuple[Handler, str]] = {}
LOG_TAIL_LINES = 200


class JobCancelled(Exception):
    """Raised inside a handler when the user asked to cancel; the job ends as cancelled."""


class UnknownJobKind(LookupError):
    pass


def job_handler(kind: str, *, queue: str = "default") -> Callable[[Handler], Handler]:
    """Register `fn(ctx) -> result dict` as the handler of job `kind` on `queue` by default."""

    def register(fn: Handler) -> Handler:
        _HANDLERS[kind] = (fn, queue)
        return fn

    return register


def registered_kinds() -> dict[str, str]:
    load_handlers()
    return {kind: queue for kind, (_, queue) in sorted(_HANDLERS.items())}


def load_handlers() -> None:
    """Import the modules that register handlers, so a worker knows every kind.

    A package listed in JOB_HANDLER_MODULES brings all its submodules (curation.tasks.ingest...).
    """
    import pkgutil
    from importlib import import_module

    for name in settings.JOB_HANDLER_MODULES:
        module = import_module(name)
        for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
            import_module(f"{name}.{info.name}")


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class JobContext:
    """What a handler gets: its parameters, resumable state, progress, log and cancel check."""

    job: Job
    _cancel: threading.Event = field(default_factory=threading.Event)
    _last_flush: float = 0.0
    _log: list[str] = field(default_factory=list)
    _dirty: bool = False

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    @property
    def state(self) -> dict[str, Any]:
        return self.job.state

    def save_state(self, **values: Any) -> None:
        """Persist the resume point now: a retried attempt starts from here."""
        self.job.state = {**self.job.state, **values}
        Job.objects.filter(pk=self.job.pk).update(state=self.job.state, updated_at=timezone.now())

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        self.job.progress_done = max(0, int(done))
        if total is not None:
            self.job.progress_total = max(0, int(total))
        if message:
            self.job.progress_message = message[:255]
        self._dirty = True
        self._flush(force=total is not None and done >= (total or 0))
        self.check_cancelled()

    def log(self, line: str) -> None:
        logger.info("job %s: %s", self.job.pk, line)
        self._log.append(f"{timezone.now():%H:%M:%S} {line}")
        self._dirty = True
        self._flush()

    def should_cancel(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled(f"job {self.job.pk} cancelled by user")

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._dirty or (not force and now - self._last_flush < 0.5):
            return
        tail = (self.job.log_tail.splitlines() + self._log)[-LOG_TAIL_LINES:]
        self.job.log_tail = "\n".join(tail)
        self._log.clear()
        Job.objects.filter(pk=self.job.pk).update(
            progress_done=self.job.progress_done,
            progress_total=self.job.progress_total,
            progress_message=self.job.progress_message,
            log_tail=self.job.log_tail,
            updated_at=timezone.now(),
        )
        self._last_flush = now
        self._dirty = False


def enqueue_job(
    kind: str,
    *,
    params: dict[str, Any] | None = None,
    queue: str | None = None,
    user: Any = None,
    target: Any = None,
    max_attempts: int | None = None,
    schedule: Any = None,
    validate: bool = True,
) -> Job:
    """Create a Job and hand it to the task backend once the transaction commits.

    `validate=False` (with an explicit queue) skips importing every handler module, for hot
    paths such as the webhook receiver that must answer within Label Studio's 1 s timeout.
    """
    if validate or queue is None:
        load_handlers()
        if kind not in _HANDLERS:
            raise UnknownJobKind(f"no job handler named {kind!r}; known: {sorted(_HANDLERS)}")
    job = Job.objects.create(
        kind=kind,
        queue=queue or _HANDLERS[kind][1],
        params=params or {},
        max_attempts=max_attempts or settings.JOB_MAX_ATTEMPTS,
        created_by=user if getattr(user, "pk", None) else None,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=target.pk if target is not None else None,
        schedule=schedule,
    )
    transaction.on_commit(lambda: dispatch(job.pk))
    return job


def dispatch(job_id: int, run_after: Any = None) -> None:
    from curation.tasks import run_job

    job = Job.objects.get(pk=job_id)
    task = run_job.using(queue_name=job.queue, run_after=run_after)
    result = task.enqueue(job_id)
    Job.objects.filter(pk=job_id).update(task_result_id=str(result.id)[:64])


def execute_job(job_id: int) -> None:
    """Run one attempt of a job: claim it, beat, call its handler, record the outcome."""
    load_handlers()
    now = timezone.now()
    claimed = Job.objects.filter(
        pk=job_id, status__in=[Job.Status.QUEUED, Job.Status.RETRYING], cancel_requested=False
    ).update(
        status=Job.Status.RUNNING,
        attempt=F("attempt") + 1,
        started_at=now,
        heartbeat_at=now,
        worker_id=worker_identity(),
        finished_at=None,
        updated_at=now,
    )
    if not claimed:
        # Already run by another worker, cancelled while queued, or a duplicate delivery.
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED, cancel_requested=True).update(
            status=Job.Status.CANCELLED, finished_at=now
        )
        return
    job = Job.objects.get(pk=job_id)
    ctx = JobContext(job=job)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(job.pk, ctx, stop), daemon=True)
    beat.start()
    try:
        handler = _HANDLERS.get(job.kind, (None, None))[0]
        if handler is None:
            raise UnknownJobKind(f"no job handler named {job.kind!r} on this worker")
        ctx.check_cancelled()
        result = handler(ctx) or {}
    except JobCancelled as exc:
        _finish(ctx, Job.Status.CANCELLED, error=str(exc))
    except Exception as exc:
        _fail(ctx, exc)
    else:
        _finish(ctx, Job.Status.SUCCEEDED, result=result)
    finally:
        stop.set()
        beat.join(timeout=5)


def _heartbeat(job_id: int, ctx: JobContext, stop: threading.Event) -> None:
    interval = settings.JOB_HEARTBEAT_SECONDS
    try:
        while not stop.wait(interval):
            Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(
                heartbeat_at=timezone.now()
            )
            if Job.objects.filter(pk=job_id, cancel_requested=True).exists():
                ctx._cancel.set()
    finally:
        connection.close()


def _finish(ctx: JobContext, status: str, *, result: dict | None = None, error: str = "") -> None:
    ctx._dirty = True
    ctx._flush(force=True)
    job = ctx.job
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "error": error}
    if result is not None:
        fields["result"] = result
    if status == Job.Status.SUCCEEDED:
        fields["progress_done"] = max(job.progress_done, job.progress_total)
    Job.objects.filter(pk=job.pk).update(**fields, updated_at=timezone.now())
    _notify_target(job.pk)


def _fail(ctx: JobContext, exc: Exception) -> None:
    job = ctx.job
    text = "".join(traceback.format_exception(exc))[-4000:]
    ctx.log(f"attempt {job.attempt} failed: {exc}")
    if job.attempt < job.max_attempts:
        delay = settings.JOB_RETRY_BACKOFF_SECONDS * (2 ** (job.attempt - 1))
        retry_at = timezone.now() + timedelta(seconds=delay)
        ctx._flush(force=True)
        Job.objects.filter(pk=job.pk).update(
            status=Job.Status.RETRYING, error=text, retry_at=retry_at, updated_at=timezone.now()
        )
        transaction.on_commit(lambda: dispatch(job.pk, run_after=retry_at))
    else:
        _finish(ctx, Job.Status.FAILED, error=text)


def _notify_target(job_id: int) -> None:
    """Let the row a job works on mirror the job's final status (runs, batches...)."""
    from curation.signals import job_finished

    job = Job.objects.get(pk=job_id)
    job_finished.send(sender=Job, job=job)


def request_cancel(job: Job) -> Job:
    """Ask a job to stop: queued jobs end at once, running ones at their next check."""
    now = timezone.now()
    Job.objects.filter(pk=job.pk, status__in=Job.ACTIVE).update(
        cancel_requested=True, updated_at=now
    )
    Job.objects.filter(pk=job.pk, status__in=[Job.Status.QUEUED, Job.Status.RETRYING]).update(
        status=Job.Status.CANCELLED, finished_at=now
    )
    job.refresh_from_db()
    if job.status == Job.Status.CANCELLED:
        _notify_target(job.pk)
    return job


class JobNotRetryable(ValueError):
    pass


def retry_job(job: Job) -> Job:
    """Run a finished job again from its saved state, with a fresh attempt budget."""
    updated = Job.objects.filter(
        pk=job.pk, status__in=[Job.Status.FAILED, Job.Status.CANCELLED, Job.Status.LOST]
    ).update(
        status=Job.Status.QUEUED,
        cancel_requested=False,
        max_attempts=F("attempt") + settings.JOB_MAX_ATTEMPTS,
        finished_at=None,
        retry_at=None,
        updated_at=timezone.now(),
    )
    if not updated:
        raise JobNotRetryable(
            f"job {job.pk} is {job.status}; only failed, cancelled or lost jobs can be retried"
        )
    transaction.on_commit(lambda: dispatch(job.pk))
    job.refresh_from_db()
    return job


def recover_lost_jobs(stale_after: timedelta | None = None) -> list[int]:
    """Requeue running jobs whose heartbeat stopped: their worker died mid-job.

    A compare-and-swap on the heartbeat keeps two schedulers from recovering the same job twice.
    """
    stale_after = settings.JOB_STALE_AFTER if stale_after is None else stale_after
    cutoff = timezone.now() - stale_after
    recovered: list[int] = []
    stale = Job.objects.filter(status=Job.Status.RUNNING).filter(
        Q(heartbeat_at__lte=cutoff) | Q(heartbeat_at__isnull=True)
    )
    for job in stale.only("pk", "heartbeat_at", "attempt", "max_attempts"):
        with transaction.atomic():
            lost = Job.objects.filter(
                pk=job.pk, status=Job.Status.RUNNING, heartbeat_at=job.heartbeat_at
            )
            if job.attempt < job.max_attempts:
                if lost.update(
                    status=Job.Status.QUEUED,
                    error=f"worker lost (no heartbeat since {job.heartbeat_at}); requeued",
                    updated_at=timezone.now(),
                ):
                    recovered.append(job.pk)
                    transaction.on_commit(lambda pk=job.pk: dispatch(pk))
            elif lost.update(status=Job.Status.LOST, finished_at=timezone.now()):
                _notify_target(job.pk)
    return recovered


def run_pending_inline(limit: int = 100) -> int:
    """Run queued jobs in this process (management command `run_jobs --inline`, demos)."""
    done = 0
    for job_id in Job.objects.filter(status=Job.Status.QUEUED).values_list("pk", flat=True)[:limit]:
        close_old_connections()
        execute_job(job_id)
        done += 1
    return done
