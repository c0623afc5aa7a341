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


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields,field,message",
    [
        ({"cron": "61 * * * *"}, "cron", "not a valid cron expression"),
        ({"cron": "0 3 * *"}, "cron", "five-field"),
        ({"job_kind": "retrain_if_new_vesrion"}, "job_kind", "no job handler named"),
        ({"queue": "gpus"}, "queue", "is not a queue"),
        ({"params": ["not", "an", "object"]}, "params", "must be a JSON object"),
        ({"params": {"note": 3}}, "params", "'note' must be str, not int"),
        ({"params": {"nope": 1}}, "params", "unknown parameter(s) ['nope']"),
    ],
)
def test_schedule_validation_names_the_field(fields, field, message):
    schedule = Schedule(**{"name": "bad", "cron": "0 3 * * *", "job_kind": "noop", **fields})
    with pytest.raises(ValidationError) as info:
        save_schedule(schedule)
    assert list(info.value.message_dict) == [field]
    assert message in info.value.message_dict[field][0]
    assert not Schedule.objects.exists()


@pytest.mark.django_db
def test_schedule_requires_declared_params():
    with pytest.raises(ValidationError) as info:
        save_schedule(Schedule(name="r", cron="0 3 * * *", job_kind="retrain_if_new_version"))
    assert "'template_run' is required" in info.value.message_dict["params"][0]
    with pytest.raises(ValidationError, match="must be int, not bool"):
        save_schedule(
            Schedule(
                name="r",
                cron="0 3 * * *",
                job_kind="retrain_if_new_version",
                params={"template_run": True},
            )
        )


@pytest.mark.django_db
def test_admin_and_api_show_the_bad_field(client, api_client, data_lead):
    from django.urls import reverse

    client.force_login(data_lead)
    response = client.post(
        reverse("admin:curation_schedule_add"),
        {
            "name": "typo",
            "cron": "0 3 * * *",
            "job_kind": "noop",
            "queue": "default",
            "params": '{"nope": 1}',
            "enabled": "on",
        },
    )
    assert response.status_code == 200  # the form again, with the error on its field
    assert "unknown parameter(s) [&#x27;nope&#x27;]" in response.content.decode()
    assert response.context["adminform"].form.errors.keys() == {"params"}
    api_client.force_authenticate(data_lead)
    response = api_client.post(
        reverse("schedule-list"),
        {"name": "typo", "cron": "0 3 * * *", "job_kind": "nope"},
        format="json",
    )
    assert response.status_code == 400 and list(response.json()) == ["job_kind"]
    assert not Schedule.objects.exists()


@pytest.mark.django_db
def test_scheduler_skips_a_bad_schedule_and_serves_the_rest(monkeypatch, caplog):
    from curation.services import jobs

    monkeypatch.setattr(jobs, "dispatch", lambda *a, **k: None)
    past = timezone.now() - timedelta(minutes=1)
    # Rows written around validation: a typo in the kind, a broken cron, bad params.
    Schedule.objects.bulk_create(
        [
            Schedule(name="a-typo", cron="* * * * *", job_kind="retrain_if_new_vesrion"),
            Schedule(name="b-cron", cron="every night", job_kind="noop"),
            Schedule(name="c-params", cron="* * * * *", job_kind="noop", params={"note": 1}),
            Schedule(name="d-good", cron="* * * * *", job_kind="noop", params={"note": "ok"}),
        ]
    )
    Schedule.objects.update(next_run_at=past)
    jobs_made = run_due_schedules()
    assert [j.schedule.name for j in jobs_made] == ["d-good"]
    rows = {s.name: s for s in Schedule.objects.all()}
    assert "job_kind: no job handler named 'retrain_if_new_vesrion'" in rows["a-typo"].last_error
    assert "cron: 'every night'" in rows["b-cron"].last_error
    assert rows["b-cron"].next_run_at is None  # waits until someone saves it fixed
    assert rows["a-typo"].next_run_at > timezone.now()  # tried again at its next time
    assert "params: 'note' must be str" in rows["c-params"].last_error
    assert rows["d-good"].last_error == "" and rows["d-good"].last_run_at is not None
    assert caplog.text.count("skipped") == 3
    # The scheduler's whole tick goes on too, and a fixed schedule runs again.
    assert run_due_schedules() == []
    fixed = rows["b-cron"]
    fixed.cron = "* * * * *"
    save_schedule(fixed)
    assert fixed.last_error == "" and fixed.next_run_at is not None


def test_heartbeat_give_up_must_come_before_the_stale_limit(settings):
    from datetime import timedelta

    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.JOB_STALE_AFTER = timedelta(seconds=60)
    settings.JOB_HEARTBEAT_GIVE_UP_SECONDS = 90
    with pytest.raises(SystemCheckError, match="JOB_HEARTBEAT_GIVE_UP_SECONDS \\(90\\) must be"):
        call_command("check")
    settings.JOB_HEARTBEAT_GIVE_UP_SECONDS = 30
    call_command("check")
