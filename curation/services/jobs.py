"""Writes for jobs: enqueue, dispatch, run one fenced attempt, cancel, retry, recover.

A django-tasks task only carries a Job id; everything the user sees lives on the Job row, so a
dead worker, a retry or another backend never loses it. Which task carries the id, and which
handler runs each kind, is whatever the task modules registered in curation.job_registry: this
module imports none of them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from curation.job_registry import Param, handler_for, job_handler, load_handlers, runner
from curation.models import Job
from curation.services.job_context import (
    AttemptStopped,
    JobCancelled,
    JobContext,
    JobRefused,
    heartbeat,
)

__all__ = [
    "AttemptStopped",
    "JobCancelled",
    "JobContext",
    "JobNotRetryable",
    "JobRefused",
    "Param",
    "UnknownJobKind",
    "dispatch",
    "enqueue_job",
    "execute_job",
    "job_handler",
    "load_handlers",
    "recover_lost_jobs",
    "redispatch_stranded_jobs",
    "request_cancel",
    "retry_job",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
# How long the end of an attempt (its result, its failure) keeps retrying a database that went
# away, e.g. PostgreSQL restarting, before the attempt gives up and leaves it to recovery.
FINISH_RETRY_SECONDS = 30.0


class UnknownJobKind(LookupError):
    pass


class JobNotRetryable(ValueError):
    pass


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
    spec = None
    if validate or queue is None:
        spec = handler_for(kind)
        if spec is None:
            from curation.job_registry import known_kinds

            raise UnknownJobKind(f"no job handler named {kind!r}; known: {known_kinds()}")
    job = Job.objects.create(
        kind=kind,
        queue=queue or (spec.queue if spec else "default"),
        params=params or {},
        max_attempts=max_attempts or settings.JOB_MAX_ATTEMPTS,
        created_by=user if getattr(user, "pk", None) else None,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=target.pk if target is not None else None,
        schedule=schedule,
    )
    _dispatch_on_commit(job.pk)
    return job


def dispatch(job_id: int, run_after: Any = None) -> None:
    """Hand job `job_id` to the task backend (after `run_after`, if given); raises if it can't."""
    job = Job.objects.get(pk=job_id)
    task = runner().using(queue_name=job.queue, run_after=run_after)
    result = task.enqueue(job_id)
    Job.objects.filter(pk=job_id).update(
        task_result_id=str(result.id)[:64], dispatched_at=timezone.now()
    )


def _dispatch_on_commit(job_id: int, run_after: Any = None) -> None:
    """Dispatch after commit; a backend that is down leaves the job to the recovery pass.

    The Job row is committed either way, so a failed send is not lost: it stays without a
    `dispatched_at`, and the scheduler's recovery pass (redispatch_stranded_jobs) sends it again.
    """

    def send() -> None:
        try:
            dispatch(job_id, run_after=run_after)
        except Exception as exc:
            logger.warning(
                "job %s is saved but could not be handed to the task backend (%s); the "
                "scheduler will dispatch it again",
                job_id,
                exc,
            )

    transaction.on_commit(send)


# RQ's scheduler keeps delayed jobs at whole-second resolution and may deliver a retry up to a
# second early; a delivery this close to its time waits, one further ahead is left to the
# recovery pass, which re-sends an overdue retry.
EARLY_DELIVERY_WAIT_SECONDS = 5.0


def _wait_for_backoff(job_id: int) -> bool:
    """Hold a retry delivered before its `retry_at` until then; False if it came far too early."""
    retry_at = (
        Job.objects.filter(pk=job_id, status=Job.Status.RETRYING)
        .values_list("retry_at", flat=True)
        .first()
    )
    if retry_at is None:
        return True
    early = (retry_at - timezone.now()).total_seconds()
    if early <= 0:
        return True
    if early > EARLY_DELIVERY_WAIT_SECONDS:
        logger.warning("job %s delivered %.0f s before its retry time; not run now", job_id, early)
        return False
    time.sleep(early)
    return True


def execute_job(job_id: int) -> None:
    """Run one attempt of a job: claim it with a fresh token, beat, run its handler, finish."""
    if not connection.in_atomic_block:
        # A long-lived worker's connection may be dead (the database restarted since its
        # last job): drop it so the claim opens a fresh one.
        close_old_connections()
    load_handlers()
    if not _wait_for_backoff(job_id):
        return
    now = timezone.now()
    token = uuid.uuid4().hex
    claimed = Job.objects.filter(
        pk=job_id, status__in=[Job.Status.QUEUED, Job.Status.RETRYING], cancel_requested=False
    ).update(
        status=Job.Status.RUNNING,
        attempt=F("attempt") + 1,
        attempt_token=token,
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
    ctx = JobContext(job=Job.objects.get(pk=job_id))
    stop = threading.Event()
    beat = threading.Thread(target=heartbeat, args=(ctx, stop), daemon=True)
    beat.start()
    try:
        spec = handler_for(ctx.job.kind)
        if spec is None:
            raise UnknownJobKind(f"no job handler named {ctx.job.kind!r} on this worker")
        ctx.check_cancelled()
        result = spec.fn(ctx) or {}
    except BaseException as exc:
        outcome: Callable[[], None] | None = _outcome_of(ctx, exc)
        if outcome is None:
            stop.set()
            raise  # KeyboardInterrupt, SystemExit: the worker is going away
    else:
        outcome = lambda: _finish(ctx, Job.Status.SUCCEEDED, result=result)  # noqa: E731
    # The beat stops before the outcome is written: a beat after it would be refused.
    stop.set()
    beat.join(timeout=5)
    outcome()


def _outcome_of(ctx: JobContext, exc: BaseException) -> Callable[[], None] | None:
    if isinstance(exc, AttemptStopped):
        return lambda: _stopped(ctx, exc)
    if isinstance(exc, JobCancelled):
        return lambda: _finish(ctx, Job.Status.CANCELLED, error=str(exc))
    if isinstance(exc, Exception):
        return lambda: _fail(ctx, exc)
    return None


def _retrying_database(what: str, fn: Callable[[], T]) -> T:
    """Run `fn` (one transaction), retrying for a while if the database is unreachable."""
    deadline = time.monotonic() + FINISH_RETRY_SECONDS
    delay = 0.5
    while True:
        try:
            return fn()
        except DatabaseError as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("%s failed (%s); retrying in %.1f s", what, exc, delay)
            connection.close()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _finish(ctx: JobContext, status: str, *, result: dict | None = None, error: str = "") -> None:
    """Record the outcome of this attempt, if it still owns the job; refused when superseded."""
    job = ctx.job
    ctx._dirty = True
    ctx._flush(force=True)
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "error": error}
    if result is not None:
        fields["result"] = result
    if status == Job.Status.SUCCEEDED:
        fields["progress_done"] = max(job.progress_done, job.progress_total)

    def write() -> bool:
        with transaction.atomic():
            if ctx._owned().update(**fields, updated_at=timezone.now()):
                _notify_target(job.pk)
                return True
        # A retry after a commit whose answer was lost finds the outcome already recorded.
        return Job.objects.filter(
            pk=job.pk, attempt_token=job.attempt_token, status=status
        ).exists()

    if not _retrying_database(f"recording the end of job {job.pk}", write):
        ctx._supersede()
        logger.warning("job %s: %s; its %s outcome is discarded", job.pk, ctx._stop_reason, status)
        return
    # One line per job that reached an end: the chaos test counts completions from these.
    logger.info("job %s %s: attempt %s %s", job.pk, job.kind, job.attempt, status)


def _fail(ctx: JobContext, exc: Exception) -> None:
    job = ctx.job
    text = "".join(traceback.format_exception(exc))[-4000:]
    ctx.log(f"attempt {job.attempt} failed: {exc}")
    if isinstance(exc, JobRefused):
        _finish(ctx, Job.Status.FAILED, error=f"refused: {exc}")
        return
    if job.attempt >= job.max_attempts:
        _finish(ctx, Job.Status.FAILED, error=text)
        return
    delay = settings.JOB_RETRY_BACKOFF_SECONDS * (2 ** (job.attempt - 1))
    retry_at = timezone.now() + timedelta(seconds=delay)
    ctx._flush(force=True)

    def write() -> bool:
        with transaction.atomic():
            if not ctx._owned().update(
                status=Job.Status.RETRYING,
                error=text,
                retry_at=retry_at,
                attempt_token="",
                dispatched_at=None,
                task_result_id="",
                updated_at=timezone.now(),
            ):
                return False
            _dispatch_on_commit(job.pk, run_after=retry_at if delay > 0 else None)
            return True

    if not _retrying_database(f"scheduling the retry of job {job.pk}", write):
        ctx._supersede()
        logger.warning("job %s: %s; its failure is discarded", job.pk, ctx._stop_reason)


def _stopped(ctx: JobContext, exc: AttemptStopped) -> None:
    """End an attempt that had to stop: superseded (nothing to do) or heartbeat lost (requeue)."""
    job = ctx.job
    if not exc.requeue:
        logger.warning("job %s: %s", job.pk, exc)
        return
    ctx.log(str(exc))
    ctx._flush(force=True)
    try:
        released = _requeue(job.pk, job.attempt_token, job.attempt, job.max_attempts, str(exc))
    except DatabaseError as db_exc:
        # Still unreachable: the scheduler requeues the job once its heartbeat is stale.
        logger.error("job %s: could not requeue after stopping (%s)", job.pk, db_exc)
        return
    if not released:
        logger.warning("job %s: superseded while stopping; nothing to requeue", job.pk)


def _requeue(job_id: int, token: str | None, attempt: int, max_attempts: int, why: str) -> bool:
    """Give a running job back to the queue (or mark it lost when out of attempts).

    `token`: the attempt giving it back; None for the scheduler, which instead matches the
    heartbeat it saw (the caller's filter). Clearing the token fences out the old attempt.
    """
    lost = Job.objects.filter(pk=job_id, status=Job.Status.RUNNING)
    if token is not None:
        lost = lost.filter(attempt_token=token)
    return _requeue_rows(lost, job_id, attempt, max_attempts, why)


def _requeue_rows(lost: Any, job_id: int, attempt: int, max_attempts: int, why: str) -> bool:
    now = timezone.now()
    with transaction.atomic():
        if attempt < max_attempts:
            if not lost.update(
                status=Job.Status.QUEUED,
                error=f"{why}; requeued",
                attempt_token="",
                dispatched_at=None,
                task_result_id="",
                updated_at=now,
            ):
                return False
            _dispatch_on_commit(job_id)
            return True
        if not lost.update(
            status=Job.Status.LOST,
            error=f"{why}; out of attempts",
            attempt_token="",
            finished_at=now,
            updated_at=now,
        ):
            return False
        _notify_target(job_id)
        return True


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
        attempt_token="",
        dispatched_at=None,
        task_result_id="",
        updated_at=timezone.now(),
    )
    if not updated:
        raise JobNotRetryable(
            f"job {job.pk} is {job.status}; only failed, cancelled or lost jobs can be retried"
        )
    _dispatch_on_commit(job.pk)
    job.refresh_from_db()
    return job


def recover_lost_jobs(stale_after: timedelta | None = None) -> list[int]:
    """Requeue running jobs whose heartbeat stopped: their worker died or lost the database.

    A compare-and-swap on the heartbeat keeps two schedulers from recovering the same job twice;
    clearing the attempt token fences out the old attempt if it is in fact still running.
    """
    stale_after = settings.JOB_STALE_AFTER if stale_after is None else stale_after
    cutoff = timezone.now() - stale_after
    recovered: list[int] = []
    stale = Job.objects.filter(status=Job.Status.RUNNING).filter(
        Q(heartbeat_at__lte=cutoff) | Q(heartbeat_at__isnull=True)
    )
    for job in stale.only("pk", "heartbeat_at", "attempt", "max_attempts"):
        lost = Job.objects.filter(
            pk=job.pk, status=Job.Status.RUNNING, heartbeat_at=job.heartbeat_at
        )
        why = f"worker lost (no heartbeat since {job.heartbeat_at})"
        requeued = _requeue_rows(lost, job.pk, job.attempt, job.max_attempts, why)
        if requeued and job.attempt < job.max_attempts:
            recovered.append(job.pk)
    return recovered


def redispatch_stranded_jobs(grace: timedelta | None = None) -> list[int]:
    """Dispatch again the queued and retrying jobs that no live task will ever run.

    A job is stranded when its dispatch failed after commit (Redis down), when the backend lost
    the task (Redis restarted without persistence), or when its retry time passed long ago and
    nothing took it. A spare dispatch is harmless: only one delivery can claim a job.
    """
    grace = timedelta(seconds=settings.JOB_DISPATCH_GRACE_SECONDS) if grace is None else grace
    now = timezone.now()
    cutoff = now - grace
    candidates = Job.objects.filter(
        Q(status=Job.Status.QUEUED, updated_at__lte=cutoff)
        | Q(status=Job.Status.RETRYING, retry_at__lte=cutoff),
        Q(dispatched_at__isnull=True) | Q(dispatched_at__lte=cutoff),
        cancel_requested=False,
    ).only("pk", "status", "task_result_id", "dispatched_at")
    sent: list[int] = []
    for job in candidates:
        if job.dispatched_at is not None:
            live = _dispatch_is_live(job, cutoff)
            if live is None:
                return sent  # the backend is unreachable: try again next tick
            if live:
                continue
        try:
            dispatch(job.pk)
        except Exception as exc:
            logger.warning("job %s: dispatch failed again (%s)", job.pk, exc)
            return sent
        logger.info("job %s: dispatched again (no live task was carrying it)", job.pk)
        sent.append(job.pk)
    return sent


def _dispatch_is_live(job: Job, cutoff: datetime) -> bool | None:
    """Whether the task backend still holds a pending delivery of `job`; None if unreachable.

    A delayed task whose start time passed before `cutoff` counts as stuck: on RQ only a
    scheduler moves it to its queue, and RQ's scheduler process dies with its Redis connection
    (a worker restarts it only at its next maintenance, ten minutes later).
    """
    from django_tasks.base import TaskResultStatus
    from django_tasks.exceptions import TaskResultDoesNotExist

    try:
        result = runner().get_result(job.task_result_id)
    except TaskResultDoesNotExist:
        return False
    except Exception as exc:
        logger.warning("cannot ask the task backend about job %s (%s)", job.pk, exc)
        return None
    if result.status == TaskResultStatus.READY:
        run_after = result.task.run_after
        return run_after is None or run_after > cutoff
    # Started but never claimed the job: its worker died between the two.
    return result.status == TaskResultStatus.RUNNING and (
        job.dispatched_at is not None
        and job.dispatched_at > timezone.now() - settings.JOB_STALE_AFTER
    )
