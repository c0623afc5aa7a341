"""Cron schedules: compute next runs and enqueue each due run exactly once."""

from __future__ import annotations

from datetime import datetime

from croniter import croniter
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from curation.models import Job, Schedule
from curation.services.jobs import enqueue_job, recover_lost_jobs


def validate_cron(expression: str) -> None:
    if not croniter.is_valid(expression) or len(expression.split()) != 5:
        raise ValidationError({"cron": f"{expression!r} is not a five-field cron expression"})


def next_run_after(expression: str, moment: datetime) -> datetime:
    return croniter(expression, moment).get_next(datetime)


def save_schedule(schedule: Schedule) -> Schedule:
    validate_cron(schedule.cron)
    if schedule.next_run_at is None or schedule.enabled:
        schedule.next_run_at = next_run_after(schedule.cron, timezone.now())
    schedule.save()
    return schedule


def run_due_schedules(now: datetime | None = None) -> list[Job]:
    """Enqueue every enabled schedule whose next run is due.

    Each schedule is claimed with a compare-and-swap on `next_run_at` inside the transaction that
    creates its job, so two schedulers ticking at once enqueue a due run once, never twice.
    """
    now = now or timezone.now()
    jobs: list[Job] = []
    due = Schedule.objects.filter(enabled=True, next_run_at__lte=now).values_list(
        "pk", "next_run_at", "cron"
    )
    for pk, due_at, cron in list(due):
        with transaction.atomic():
            claimed = Schedule.objects.filter(pk=pk, next_run_at=due_at).update(
                next_run_at=next_run_after(cron, now), last_run_at=now
            )
            if not claimed:
                continue
            schedule = Schedule.objects.get(pk=pk)
            jobs.append(
                enqueue_job(
                    schedule.job_kind,
                    params=schedule.params,
                    queue=schedule.queue,
                    schedule=schedule,
                )
            )
    return jobs


def scheduler_tick(now: datetime | None = None) -> dict[str, int]:
    """One pass of the scheduler process: due schedules, then jobs whose worker died."""
    enqueued = run_due_schedules(now)
    recovered = recover_lost_jobs()
    return {"enqueued": len(enqueued), "recovered": len(recovered)}
