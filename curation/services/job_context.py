"""What a running attempt of a job holds: its fencing token, progress, log, cancel and heartbeat.

Every write an attempt makes to its Job row is conditional on its attempt token
(`UPDATE … WHERE attempt_token = X AND status = running`). When the scheduler requeues a job
whose heartbeat went stale it clears the token, so a run that was only slow — not dead — finds
its writes refused and stops, and the attempt that replaced it is the only one that can finish.

Handlers make their own side effects idempotent per attempt with `fence()`: called inside the
transaction that writes them, it refuses (raises AttemptStopped, rolling the transaction back)
once the attempt is superseded, and on PostgreSQL holds the Job row's lock until the commit, so
the token cannot change between the check and the writes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from curation.models import Job

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 200
# After a failed beat, try again this often (or at the heartbeat interval if shorter).
HEARTBEAT_RETRY_SECONDS = 1.0


class JobCancelled(Exception):
    """Raised inside a handler when the user asked to cancel; the job ends as cancelled."""


class JobRefused(Exception):
    """Raised by a handler whose input cannot work (a file gone, a request the target cannot
    serve): the job fails at once with this message as its error, no traceback, no retry —
    another attempt would be refused the same way."""


class AttemptStopped(JobCancelled):
    """This attempt may not go on: another attempt superseded it, or it lost its heartbeat.

    A JobCancelled, so handlers that stop cooperatively on a cancel stop on this too; the job
    does not end as cancelled: it belongs to the attempt that replaced this one, or goes back to
    the queue (`requeue`).
    """

    def __init__(self, message: str, *, requeue: bool = False) -> None:
        super().__init__(message)
        self.requeue = requeue


@dataclass
class JobContext:
    """What a handler gets: its parameters, resumable state, progress, log, cancel and fence."""

    job: Job
    _cancel: threading.Event = field(default_factory=threading.Event)
    _stop_reason: str = ""
    _requeue: bool = False
    _last_flush: float = 0.0
    _log: list[str] = field(default_factory=list)
    _dirty: bool = False

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    @property
    def state(self) -> dict[str, Any]:
        return self.job.state

    @property
    def attempt_token(self) -> str:
        """This attempt's fencing token: a key for side effects that must happen once per attempt."""
        return self.job.attempt_token

    def is_current(self) -> bool:
        """Whether this attempt still owns the job (a read: use fence() to guard a write)."""
        current = self._owned().exists()
        if not current:
            self._supersede()
        return current

    def fence(self) -> None:
        """Refuse to go on unless this attempt still owns the job; call inside `atomic()`.

        Put it first in the transaction that writes the handler's side effects (counters, rows):
        if the attempt was superseded it raises AttemptStopped and the transaction rolls back.
        """
        if not self._write(updated_at=timezone.now()):
            self.check_cancelled()

    def save_state(self, **values: Any) -> None:
        """Persist the resume point now: a retried attempt starts from here. Fenced."""
        state = {**self.job.state, **values}
        if not self._write(state=state, updated_at=timezone.now()):
            self.check_cancelled()
        self.job.state = state

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
        return self._cancel.is_set() or bool(self._stop_reason)

    def check_cancelled(self) -> None:
        if self._stop_reason:
            raise AttemptStopped(self._stop_reason, requeue=self._requeue)
        if self._cancel.is_set():
            raise JobCancelled(f"job {self.job.pk} cancelled by user")

    def _owned(self) -> Any:
        return Job.objects.filter(
            pk=self.job.pk, attempt_token=self.job.attempt_token, status=Job.Status.RUNNING
        )

    def _write(self, **fields: Any) -> bool:
        """A conditional update of this attempt's Job row; False (and stop) when superseded."""
        if self._owned().update(**fields):
            return True
        self._supersede()
        return False

    def _supersede(self) -> None:
        if not self._stop_reason:
            self._stop_reason = (
                f"attempt {self.job.attempt} of job {self.job.pk} was superseded (its worker "
                "was presumed lost and the job requeued); its writes are refused"
            )

    def _stop(self, reason: str, *, requeue: bool) -> None:
        if not self._stop_reason:
            self._stop_reason, self._requeue = reason, requeue

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._dirty or (not force and now - self._last_flush < 0.5):
            return
        tail = (self.job.log_tail.splitlines() + self._log)[-LOG_TAIL_LINES:]
        if not self._write(
            progress_done=self.job.progress_done,
            progress_total=self.job.progress_total,
            progress_message=self.job.progress_message,
            log_tail="\n".join(tail),
            updated_at=timezone.now(),
        ):
            return
        self.job.log_tail = "\n".join(tail)
        self._log.clear()
        self._last_flush = now
        self._dirty = False


def _beat(ctx: JobContext) -> bool | None:
    """Record one heartbeat: None when the attempt was superseded, else the cancel flag."""
    if not ctx._write(heartbeat_at=timezone.now()):
        return None
    return Job.objects.filter(pk=ctx.job.pk, cancel_requested=True).exists()


def heartbeat(ctx: JobContext, stop: threading.Event) -> None:
    """Beat every JOB_HEARTBEAT_SECONDS until `stop`; runs in its own thread and connection.

    A failed beat (SQLite "database is locked", PostgreSQL restarting) is retried. When no beat
    has been recorded for JOB_HEARTBEAT_GIVE_UP_SECONDS — less than JOB_STALE_AFTER, after which
    the scheduler would requeue the job — the attempt is told to stop, so it does not run on
    beside the attempt that will replace it.
    """
    interval = settings.JOB_HEARTBEAT_SECONDS
    give_up = settings.JOB_HEARTBEAT_GIVE_UP_SECONDS
    last_beat = time.monotonic()
    failing = False
    try:
        while not stop.wait(min(interval, HEARTBEAT_RETRY_SECONDS) if failing else interval):
            try:
                cancel = _beat(ctx)
            except DatabaseError as exc:
                with contextlib.suppress(DatabaseError):
                    connection.close()  # reconnect on the next try
                silent_for = time.monotonic() - last_beat
                if silent_for >= give_up:
                    ctx._stop(
                        f"attempt {ctx.job.attempt} of job {ctx.job.pk} could not record a "
                        f"heartbeat for {silent_for:.0f} s (last error: {exc}); it stopped so "
                        "that another attempt can run the job",
                        requeue=True,
                    )
                    logger.error("job %s: %s", ctx.job.pk, ctx._stop_reason)
                    return
                if not failing:
                    logger.warning("job %s: heartbeat failed (%s); retrying", ctx.job.pk, exc)
                failing = True
                continue
            failing = False
            last_beat = time.monotonic()
            if cancel is None:
                logger.warning("job %s: %s", ctx.job.pk, ctx._stop_reason)
                return
            if cancel:
                ctx._cancel.set()
    finally:
        with contextlib.suppress(DatabaseError):
            connection.close()
