"""Cron schedules are enqueued once per due run, even with two schedulers at once."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.utils import timezone

from curation.models import Job, Schedule
from curation.services.schedules import run_due_schedules, save_schedule, validate_cron
from tests.conftest import PYTHON, ROOT, subprocess_env


def test_cron_validation_names_the_field():
    validate_cron("*/5 * * * *")
    with pytest.raises(ValidationError) as info:
        validate_cron("every night")
    assert "cron" in info.value.message_dict


@pytest.mark.django_db
def test_due_schedule_runs_once_and_moves_on(django_capture_on_commit_callbacks, monkeypatch):
    from curation.services import jobs

    monkeypatch.setattr(jobs, "dispatch", lambda *a, **k: None)
    schedule = save_schedule(Schedule(name="nightly", cron="0 3 * * *", job_kind="noop"))
    assert schedule.next_run_at > timezone.now()
    later = schedule.next_run_at + timedelta(seconds=1)
    first = run_due_schedules(now=later)
    assert [j.schedule_id for j in first] == [schedule.pk]
    assert run_due_schedules(now=later) == []
    schedule.refresh_from_db()
    assert schedule.next_run_at == schedule.last_run_at.replace(
        hour=3, minute=0, second=0, microsecond=0
    ) + timedelta(days=1)


@pytest.mark.django_db(transaction=True)
def test_two_scheduler_processes_enqueue_each_due_run_exactly_once():
    past = timezone.now() - timedelta(minutes=1)
    Schedule.objects.bulk_create(
        Schedule(name=f"s{i}", cron="* * * * *", job_kind="noop", next_run_at=past)
        for i in range(40)
    )
    env = subprocess_env()
    command = [PYTHON, str(ROOT / "manage.py"), "scheduler", "--once"]
    procs = [subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    per_schedule = Job.objects.values("schedule").annotate(n=Count("id"))
    assert len(per_schedule) == 40
    assert {row["n"] for row in per_schedule} == {1}
