"""Nightly retrain when a newer frozen version exists; the demo stages; styledrop human feedback."""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.models import AnnotationRound, Job, Judgement
from curation.services import jobs as job_services
from curation.services.versions import add_items, create_draft_version, freeze_version
from training.models import TrainingRun
from training.services.demo_training import demo_generate, demo_train_domain
from training.services.runs.inputs import create_training_run
from training.services.runs.jobs import enqueue_training, resume_training
from training.services.schedules import nightly_retrain_schedule, retrain_if_new_version

from .conftest import stored_image


@pytest.mark.django_db
def test_retrain_starts_a_run_only_for_a_newer_frozen_version(
    versions, tiny_base, data_lead, no_dispatch, django_capture_on_commit_callbacks
):
    template = create_training_run(
        recipe="style_tailoring",
        dataset_versions=[versions["alignment"], versions["style"]],
        base_checkpoint=tiny_base,
        user=data_lead,
    )
    schedule = nightly_retrain_schedule(template)
    assert schedule.job_kind == "retrain_if_new_version" and schedule.next_run_at is not None
    assert retrain_if_new_version(schedule.params)["started"] is None  # nothing newer

    newer = create_draft_version(versions["style"].dataset, parent=versions["style"])
    add_items(newer, [{"image": stored_image((1, 2, 3), "extra"), "caption": "extra"}])
    newer = freeze_version(newer)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = retrain_if_new_version(schedule.params)
    run = TrainingRun.objects.get(pk=outcome["started"])
    assert set(run.dataset_versions.all()) == {versions["alignment"], newer}
    assert run.status == TrainingRun.Status.QUEUED and run.job.queue == "gpu"
    assert run.hyperparameters == template.hyperparameters
    assert retrain_if_new_version(schedule.params)["started"] is None  # once per new version


@pytest.mark.django_db
def test_demo_stages_train_then_generate(client, versions, prompt_set, data_lead):
    checkpoint = demo_train_domain(versions["domain"], data_lead, steps=2)
    assert checkpoint.step == 2 and checkpoint.training_run.status == TrainingRun.Status.SUCCEEDED
    assert list(checkpoint.dataset_versions.all()) == [versions["domain"]]
    batch = demo_generate(checkpoint, prompt_set, data_lead, seeds=[0])
    assert batch.status == "succeeded" and batch.generations.count() == 2
    assert batch.job.status == Job.Status.SUCCEEDED and batch.sampler["resolution"] == 32

    client.force_login(data_lead)
    page = client.get(reverse("admin:training_checkpoint_change", args=[checkpoint.pk]))
    body = page.content.decode()
    assert versions["domain"].checksum in body and "code version" in body
    assert str(checkpoint.parent) in body
    page = client.get(reverse("admin:training_generationbatch_change", args=[batch.pk]))
    assert page.content.decode().count("repeating-conic-gradient") == 2  # checkerboard thumbnails


@pytest.mark.django_db
def test_styledrop_waits_for_a_style_round_then_trains_on_its_verdicts(
    versions, tiny_base, data_lead, no_dispatch, django_capture_on_commit_callbacks
):
    run = create_training_run(
        recipe="styledrop_iterative",
        adapter="lora",
        dataset_versions=[versions["style"]],
        base_checkpoint=tiny_base,
        hyperparameters={
            "steps": 2,
            "styledrop": {
                "feedback": "human",
                "prompts": ["a cat"],
                "seeds": [0, 1],
                "top_k": None,
            },
        },
        user=data_lead,
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = enqueue_training(run, data_lead)
    with django_capture_on_commit_callbacks(execute=True):
        job_services.execute_job(job.pk)
    job.refresh_from_db()
    run.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and run.status == TrainingRun.Status.WAITING
    round_ = AnnotationRound.objects.get(pk=job.result["round_id"])
    assert round_.kind == "style" and round_.tasks.filter(is_gold=False).count() == 2
    push = Job.objects.get(kind="labelstudio.push")
    assert push.params == {"round_id": round_.pk}

    # Annotators judged: one passes. Closing the round and resuming trains iteration 2 on it.
    tasks = list(round_.tasks.filter(is_gold=False).order_by("pk"))
    Judgement.objects.create(task=tasks[0], value={"passed": True, "votes": 3}, n_ratings=3)
    Judgement.objects.create(task=tasks[1], value={"passed": False, "votes": 3}, n_ratings=3)
    AnnotationRound.objects.filter(pk=round_.pk).update(state=AnnotationRound.State.CLOSED)
    with django_capture_on_commit_callbacks(execute=True):
        second = resume_training(run, data_lead)
    job_services.execute_job(second.pk)
    second.refresh_from_db()
    run.refresh_from_db()
    assert second.status == Job.Status.SUCCEEDED, second.error
    assert run.status == TrainingRun.Status.SUCCEEDED
    checkpoint = run.checkpoints.get()
    detail = checkpoint.lineage["styledrop_iterative"]
    assert detail["iteration"] == 2 and detail["feedback"] == "human"
