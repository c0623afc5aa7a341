"""Cron schedules: validate, compute next runs, enqueue each due run once; the scheduler's tick."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from curation.cron import cron_error, next_run_after
from curation.models import Job, Schedule
from curation.services.jobs import enqueue_job, recover_lost_jobs, redispatch_stranded_jobs

logger = logging.getLogger(__name__)


def validate_cron(expression: str) -> None:
    if problem := cron_error(expression):
        raise ValidationError({"cron": problem})


def save_schedule(schedule: Schedule) -> Schedule:
    """Validate (kind, cron, queue, params: a ValidationError names the field) and save."""
    schedule.full_clean(exclude=["next_run_at", "last_run_at", "last_error"])
    if schedule.next_run_at is None or schedule.enabled:
        schedule.next_run_at = next_run_after(schedule.cron, timezone.now())
    schedule.last_error = ""
    schedule.save()
    return schedule


def run_due_schedules(now: datetime | None = None) -> list[Job]:
    """Enqueue every enabled schedule whose next run is due; skip (and record) broken ones.

    Each schedule is claimed with a compare-and-swap on `next_run_at` inside the transaction that
    creates its job, so two schedulers ticking at once enqueue a due run once, never twice.
    A schedule that fails validation (written around the admin, or whose job kind a deploy
    removed) is skipped with its reason in `last_error` and the log; the others still run.
    """
    now = now or timezone.now()
    jobs: list[Job] = []
    due = Schedule.objects.filter(enabled=True, next_run_at__lte=now).order_by("pk")
    for schedule in list(due):
        errors = schedule.validation_errors()
        if errors:
            _skip(schedule, errors, now)
            continue
        with transaction.atomic():
            claimed = Schedule.objects.filter(
                pk=schedule.pk, next_run_at=schedule.next_run_at
            ).update(next_run_at=next_run_after(schedule.cron, now), last_run_at=now, last_error="")
            if not claimed:
                continue
            jobs.append(
                enqueue_job(
                    schedule.job_kind,
                    params=schedule.params,
                    queue=schedule.queue,
                    schedule=schedule,
                )
            )
    return jobs


def _skip(schedule: Schedule, errors: dict[str, str], now: datetime) -> None:
    reason = "; ".join(f"{field}: {message}" for field, message in sorted(errors.items()))
    logger.error("schedule %r (#%s) skipped: %s", schedule.name, schedule.pk, reason)
    # A bad cron has no next run: it waits, disabled in effect, until someone saves it fixed.
    next_run = None if "cron" in errors else next_run_after(schedule.cron, now)
    Schedule.objects.filter(pk=schedule.pk, next_run_at=schedule.next_run_at).update(
        next_run_at=next_run, last_error=f"{now:%Y-%m-%d %H:%M:%S} UTC skipped: {reason}"[:2000]
    )


def scheduler_tick(now: datetime | None = None) -> dict[str, int]:
    """One pass of the scheduler process: due schedules, lost jobs, then stranded dispatches.

    Each part runs even when another fails (the database or Redis briefly away), so one broken
    part never stops the others; the failure is logged and the next tick tries again.
    """
    parts: list[tuple[str, Callable[[], list]]] = [
        ("enqueued", lambda: run_due_schedules(now)),
        ("recovered", recover_lost_jobs),
        ("redispatched", redispatch_stranded_jobs),
    ]
    counts: dict[str, int] = {}
    for name, part in parts:
        try:
            counts[name] = len(part())
        except Exception:
            logger.exception("scheduler: the %s pass failed; it runs again next tick", name)
            counts[name] = 0
            with contextlib.suppress(DatabaseError):
                connection.close()  # a broken connection must not fail the next part too
            counts["errors"] = counts.get("errors", 0) + 1
    return counts
