"""Training admin: only frozen versions offered, start/cancel/resume by role, run page content."""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.models import Job
from training.models import TrainingRun
from training.services.runs.inputs import create_training_run

from .conftest import make_version


@pytest.mark.django_db
def test_add_form_lists_only_frozen_versions_and_refuses_drafts(
    client, data_lead, versions, tiny_base
):
    draft = make_version("domain", freeze=False, offset=7)
    client.force_login(data_lead)
    page = client.get(reverse("admin:training_trainingrun_add"))
    assert page.status_code == 200
    offered = set(page.context["adminform"].form.fields["dataset_versions"].queryset)
    assert offered == set(versions.values()) and draft not in offered
    # hyperparameters prefilled with the defaults
    assert "&quot;steps&quot;: 1000" in page.content.decode()

    form = {
        "name": "",
        "recipe": "domain",
        "adapter": "lora",
        "base_checkpoint": tiny_base.pk,
        "dataset_versions": [draft.pk],
        "hyperparameters": "{}",
    }
    refused = client.post(reverse("admin:training_trainingrun_add"), form)
    assert refused.status_code == 200 and not TrainingRun.objects.exists()
    assert "dataset_versions" in refused.context["adminform"].form.errors

    form["dataset_versions"] = [versions["alignment"].pk]
    wrong_kind = client.post(reverse("admin:training_trainingrun_add"), form)
    assert "needs a frozen domain version" in str(wrong_kind.context["adminform"].form.errors)

    form["dataset_versions"] = [versions["domain"].pk]
    form["hyperparameters"] = '{"steps": 3}'
    saved = client.post(reverse("admin:training_trainingrun_add"), form)
    assert saved.status_code == 302
    run = TrainingRun.objects.get()
    assert run.hyperparameters["steps"] == 3 and run.hyperparameters["resolution"] == 32
    assert run.created_by == data_lead and run.status == TrainingRun.Status.DRAFT


@pytest.mark.django_db
def test_start_action_by_role(
    client,
    annotator,
    data_lead,
    versions,
    tiny_base,
    no_dispatch,
    django_capture_on_commit_callbacks,
):
    run = create_training_run(
        recipe="domain", dataset_versions=[versions["domain"]], base_checkpoint=tiny_base
    )
    url = reverse("admin:training_trainingrun_changelist")
    action = {"action": "start", "_selected_action": [run.pk]}
    client.force_login(annotator)
    refused = client.post(url, action)
    assert refused.status_code == 302 and reverse("admin:login") in refused["Location"]
    assert not Job.objects.exists()

    client.force_login(data_lead)
    with django_capture_on_commit_callbacks(execute=True):
        started = client.post(url, action)
    assert started.status_code == 302
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED
    assert run.job.kind == "train" and run.job.queue == "gpu" and run.job.created_by == data_lead
    assert no_dispatch == [run.job.pk]

    page = client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))
    body = page.content.decode()
    assert page.status_code == 200 and f"job #{run.job.pk}" in body
    assert versions["domain"].checksum in body and 'name="_cancel"' in body

    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, {"action": "cancel", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert run.job.status == Job.Status.CANCELLED and run.status == TrainingRun.Status.CANCELLED


@pytest.mark.django_db
def test_run_page_shows_the_loss_curve(client, data_lead, versions, tiny_base):
    run = create_training_run(
        recipe="domain", dataset_versions=[versions["domain"]], base_checkpoint=tiny_base
    )
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.FAILED,
        loss_curve=[{"step": s, "loss": 1.0 / s} for s in range(1, 6)],
    )
    client.force_login(data_lead)
    body = client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    assert "<polyline" in body and "step 5" in body and 'name="_resume"' in body


@pytest.mark.django_db
def test_api_creates_only_valid_runs_and_starts_them(
    api_client, data_lead, versions, tiny_base, no_dispatch, django_capture_on_commit_callbacks
):
    api_client.force_authenticate(data_lead)
    draft = make_version("domain", freeze=False, offset=9)
    payload = {
        "name": "api run",
        "recipe": "domain",
        "adapter": "lora",
        "base_checkpoint": tiny_base.pk,
        "dataset_versions": [draft.pk],
        "hyperparameters": {"steps": 2},
    }
    refused = api_client.post(reverse("trainingrun-list"), payload, format="json")
    assert refused.status_code == 400 and "dataset_versions" in refused.json()
    payload["dataset_versions"] = [versions["domain"].pk]
    created = api_client.post(reverse("trainingrun-list"), payload, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["hyperparameters"]["resolution"] == 32
    with django_capture_on_commit_callbacks(execute=True):
        started = api_client.post(reverse("trainingrun-start", args=[created.json()["id"]]))
    assert started.status_code == 202 and started.json()["kind"] == "train"
    again = api_client.post(reverse("trainingrun-start", args=[created.json()["id"]]))
    assert again.status_code == 409 and "active job" in again.json()["detail"]


@pytest.mark.django_db
def test_generation_batch_start_action(
    client, data_lead, tiny_base, prompt_set, no_dispatch, django_capture_on_commit_callbacks
):
    from training.services.generation import create_generation_batch

    batch = create_generation_batch(tiny_base, prompt_set, [0])
    client.force_login(data_lead)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:training_generationbatch_changelist"),
            {"action": "start", "_selected_action": [batch.pk]},
        )
    assert response.status_code == 302
    batch.refresh_from_db()
    assert (
        batch.status == "queued" and batch.job.kind == "generate" and no_dispatch == [batch.job.pk]
    )


@pytest.mark.django_db
def test_run_page_shows_a_row_for_its_buttons_only_when_it_has_some(
    client, data_lead, versions, tiny_base
):
    import re

    run = create_training_run(
        recipe="domain", dataset_versions=[versions["domain"]], base_checkpoint=tiny_base
    )
    client.force_login(data_lead)
    page = reverse("admin:training_trainingrun_change", args=[run.pk])

    def labels() -> list[str]:
        return re.findall(r"<label[^>]*>([^<]*)</label>", client.get(page).content.decode())

    assert "Run:" in labels() and 'name="_start"' in client.get(page).content.decode()
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    finished = labels()
    assert "Run:" not in finished and "Checkpoints:" in finished
    assert all(label.strip(" :") for label in finished), finished  # no label without a name
