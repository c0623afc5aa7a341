"""The round admin page: counts, agreement and flagged annotators; actions enqueue jobs."""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.models import Annotation, AnnotatorAccount, Job, Schedule
from curation.services.round_quality import compute_round_quality
from curation.services.rounds import GoldItem, create_round
from curation.services.sync import ensure_default_schedules

from .conftest import make_image

pytestmark = pytest.mark.django_db


def test_round_page_shows_quality_and_actions_enqueue(
    client, data_lead, make_batch, make_annotators
):
    batch = make_batch("adm", ["a", "b"])
    round_ = create_round(
        name="admin round",
        kind="alignment",
        generation_batch=batch,
        gold=[GoldItem(image=make_image(77), prompt="g", answer={"aligned": True})],
        gold_rate=0.5,
    )
    good, bad = make_annotators(2)
    for i, user in enumerate((good, bad)):
        AnnotatorAccount.objects.create(user=user, email=user.email, labelstudio_user_id=50 + i)
    for n, task in enumerate(round_.tasks.all()):
        for i in range(2):
            Annotation.objects.create(
                task=task,
                labelstudio_id=1000 + 10 * n + i,
                labelstudio_user_id=50 + i,
                raw={},
                aligned=(True if task.is_gold else n % 2 == 0) if i == 0 else False,
            )
    compute_round_quality(round_)
    client.force_login(data_lead)
    page = client.get(reverse("admin:curation_annotationround_change", args=[round_.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "3 tasks (1 gold, 0 in Label Studio, 2 judged)" in text
    assert "Krippendorff" in text and bad.email in text

    response = client.post(
        reverse("admin:curation_annotationround_changelist"),
        {"action": "push", "_selected_action": [round_.pk]},
        follow=True,
    )
    assert response.status_code == 200
    job = Job.objects.get(kind="labelstudio.push")
    assert job.params == {"round_id": round_.pk} and job.created_by == data_lead
    client.post(
        reverse("admin:curation_annotationround_changelist"),
        {"action": "curate", "_selected_action": [round_.pk]},
    )
    assert not Job.objects.filter(kind="labelstudio.curate").exists()  # a draft is not curated


def test_default_schedule_is_created_once(db):
    first = ensure_default_schedules()
    second = ensure_default_schedules()
    assert [s.pk for s in first] == [s.pk for s in second]
    schedule = Schedule.objects.get(job_kind="labelstudio.reconcile")
    assert schedule.enabled and schedule.next_run_at is not None and schedule.params == {}
