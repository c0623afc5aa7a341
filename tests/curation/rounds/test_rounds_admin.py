"""The round admin page: counts, agreement and flagged annotators; actions enqueue jobs."""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.models import Annotation, AnnotatorAccount, GoldItem, Job, Schedule
from curation.services.aggregation import compute_round_quality
from curation.services.rounds.create import create_round
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


def test_round_list_and_page_follow_progress_without_json(
    client, data_lead, make_batch, make_annotators, settings
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from curation.models import AnnotationRound

    settings.LABEL_STUDIO_URL = "http://ls.example:8089"
    batch = make_batch("prog", ["a", "b", "c", "d"])
    round_ = create_round(name="progress round", kind="alignment", generation_batch=batch)
    AnnotationRound.objects.filter(pk=round_.pk).update(overlap=2, labelstudio_project_id=17)
    round_.refresh_from_db()
    one, two, three = make_annotators(3)
    for i, user in enumerate((one, two, three)):
        AnnotatorAccount.objects.create(user=user, email=user.email, labelstudio_user_id=60 + i)
    tasks = list(round_.tasks.order_by("id"))
    ids = iter(range(5000, 6000))
    # Task 0: three live annotations (capped at overlap 2); task 1: one, plus one deleted;
    # task 2: one skipped (not done); task 3: none. Done = 2 + 1 = 3 of 4 x 2 = 8 -> 37.5%.
    for user_id in (60, 61, 62):
        Annotation.objects.create(
            task=tasks[0],
            labelstudio_id=next(ids),
            labelstudio_user_id=user_id,
            raw={},
            aligned=True,
        )
    Annotation.objects.create(
        task=tasks[1], labelstudio_id=next(ids), labelstudio_user_id=60, raw={}, aligned=True
    )
    Annotation.objects.create(
        task=tasks[1], labelstudio_id=next(ids), labelstudio_user_id=61, raw={}, deleted=True
    )
    Annotation.objects.create(
        task=tasks[2], labelstudio_id=next(ids), labelstudio_user_id=61, raw={}, was_cancelled=True
    )
    compute_round_quality(round_)
    client.force_login(data_lead)
    listing = client.get(reverse("admin:curation_annotationround_changelist"))
    text = listing.content.decode()
    assert "37.5%" in text
    assert "α" in text and "agree" in text
    assert 'href="http://ls.example:8089/projects/17/data"' in text

    # The list costs the same queries with more rounds: progress is part of the list query.
    with CaptureQueriesContext(connection) as few:
        client.get(reverse("admin:curation_annotationround_changelist"))
    for n in range(5):
        create_round(name=f"more {n}", kind="alignment", generation_batch=batch)
    with CaptureQueriesContext(connection) as many:
        client.get(reverse("admin:curation_annotationround_changelist"))
    assert len(many.captured_queries) == len(few.captured_queries)

    page = client.get(reverse("admin:curation_annotationround_change", args=[round_.pk]))
    html = page.content.decode()
    assert "3 of 8 wanted annotations (4 tasks × overlap 2)" in html
    # Per annotator: one did 2 of 4 tasks (50%), two 1 live + 1 skipped, three 1 task.
    assert one.email in html and "50.0%" in html and "25.0%" in html
    assert "agreement with consensus" in html
    assert "{&#x27;" not in html and "{'" not in html  # no raw dicts on the page


def test_curated_round_is_read_only(client, data_lead, make_batch):
    from curation.models import AnnotationRound

    batch = make_batch("cur", ["a"])
    round_ = create_round(name="curated round", kind="alignment", generation_batch=batch)
    AnnotationRound.objects.filter(pk=round_.pk).update(state="curated")
    client.force_login(data_lead)
    url = reverse("admin:curation_annotationround_change", args=[round_.pk])
    page = client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    assert "name" not in form.fields and "overlap" not in form.fields
    client.post(url, {"name": "renamed", "overlap": 9})
    round_.refresh_from_db()
    assert round_.name == "curated round" and round_.overlap != 9
    assert not page.context["has_delete_permission"]


def test_default_schedule_is_created_once(db):
    first = ensure_default_schedules()
    second = ensure_default_schedules()
    assert [s.pk for s in first] == [s.pk for s in second]
    schedule = Schedule.objects.get(job_kind="labelstudio.reconcile")
    assert schedule.enabled and schedule.next_run_at is not None and schedule.params == {}
