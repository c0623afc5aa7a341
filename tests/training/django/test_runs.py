"""Training runs through the job path: frozen versions only, lineage, checksum, cancel and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from curation.models import Job
from curation.services import jobs as job_services
from training.models import Checkpoint, TrainingRun
from training.services.runs.config import build_train_config
from training.services.runs.inputs import TrainingRunError, create_training_run
from training.services.runs.jobs import enqueue_training, resume_training

from .conftest import make_version

TINY = {"steps": 4, "checkpoint_every": 2}


def _start(run: TrainingRun, user, capture) -> Job:
    with capture(execute=True):
        job = enqueue_training(run, user)
    assert job.queue == "gpu" and job.kind == "train"
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    return job


@pytest.mark.django_db
@pytest.mark.parametrize("recipe", ["domain", "style_tailoring"])
def test_run_from_frozen_versions_makes_a_checkpoint_with_exact_lineage(
    recipe, versions, tiny_base, data_lead, no_dispatch, django_capture_on_commit_callbacks
):
    used = (
        [versions["domain"]] if recipe == "domain" else [versions["alignment"], versions["style"]]
    )
    run = create_training_run(
        recipe=recipe,
        adapter="lora",
        dataset_versions=used,
        base_checkpoint=tiny_base,
        hyperparameters=TINY,
        user=data_lead,
    )
    assert run.hyperparameters["resolution"] == 32  # tiny defaults merged in
    job = _start(run, data_lead, django_capture_on_commit_callbacks)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.percent == 100.0 and job.progress_total == 4
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED and run.job_id == job.pk
    assert [p["step"] for p in run.loss_curve] == [1, 2, 3, 4]
    checkpoint = Checkpoint.objects.get(training_run=run)
    assert job.result["checkpoint"] == checkpoint.pk
    assert checkpoint.parent == tiny_base and checkpoint.step == 4 and checkpoint.adapter == "lora"
    assert set(checkpoint.dataset_versions.all()) == set(used)
    assert Path(checkpoint.path, "adapter").is_dir()
    platform = checkpoint.lineage["platform"]
    assert platform["training_run"] == run.pk
    assert {(v["id"], v["checksum"]) for v in platform["dataset_versions"]} == {
        (v.pk, v.checksum) for v in used
    }
    engine_datasets = checkpoint.lineage["datasets"]
    for version in used:
        role = "domain" if recipe == "domain" else version.dataset.kind
        assert engine_datasets[role]["sha256"] == version.checksum
        assert engine_datasets[role]["version_id"] == str(version.pk)
    assert checkpoint.config["recipe"] == recipe
    assert checkpoint.metrics["steps"] == 4 and checkpoint.metrics["final_loss"] > 0
    assert "falling back to the CPU" in job.log_tail or "cuda" in checkpoint.metrics["device"]


@pytest.mark.django_db
def test_unfrozen_version_is_refused(tiny_base):
    draft = make_version("domain", freeze=False)
    with pytest.raises(TrainingRunError, match="only frozen dataset versions") as caught:
        create_training_run(recipe="domain", dataset_versions=[draft], base_checkpoint=tiny_base)
    assert caught.value.field == "dataset_versions" and "is a draft" in str(caught.value)


@pytest.mark.django_db
def test_recipe_roles_are_checked(versions, tiny_base):
    with pytest.raises(TrainingRunError, match="needs a frozen style version"):
        create_training_run(
            recipe="style_tailoring",
            dataset_versions=[versions["alignment"]],
            base_checkpoint=tiny_base,
        )
    with pytest.raises(TrainingRunError, match="does not use domain versions"):
        create_training_run(
            recipe="style_tailoring",
            dataset_versions=[versions["alignment"], versions["style"], versions["domain"]],
            base_checkpoint=tiny_base,
        )
    with pytest.raises(TrainingRunError, match="needs a frozen style version"):
        create_training_run(
            recipe="styledrop_iterative",
            dataset_versions=[versions["domain"]],
            base_checkpoint=tiny_base,
        )
    with pytest.raises(TrainingRunError) as caught:
        create_training_run(
            recipe="style_tailoring",
            dataset_versions=[versions["alignment"], versions["style"]],
            base_checkpoint=tiny_base,
            hyperparameters={"mix_ratio": 1.5},
        )
    assert caught.value.field == "hyperparameters.mix_ratio"


@pytest.mark.django_db
def test_manifest_changed_after_freezing_is_refused(
    versions, tiny_base, data_lead, no_dispatch, django_capture_on_commit_callbacks
):
    version = versions["domain"]
    run = create_training_run(
        recipe="domain", dataset_versions=[version], base_checkpoint=tiny_base, hyperparameters=TINY
    )
    manifest = Path(default_storage.path(version.manifest_path))
    original = manifest.read_bytes()
    # Content-addressed: other tests freezing the same rows share this file, so put it back.
    manifest.write_bytes(original + b"tampered")
    try:
        with pytest.raises(TrainingRunError, match="manifest checksum mismatch") as caught:
            build_train_config(run)
        assert version.checksum in str(caught.value) and str(version) in str(caught.value)
        job = _start(run, data_lead, django_capture_on_commit_callbacks)
    finally:
        manifest.write_bytes(original)
    assert job.status == Job.Status.RETRYING and "manifest checksum mismatch" in job.error
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert not Checkpoint.objects.filter(training_run=run).exists()


@pytest.mark.django_db
def test_cancel_then_resume_continues_from_the_engine_checkpoint(
    versions, tiny_base, data_lead, no_dispatch, django_capture_on_commit_callbacks, monkeypatch
):
    run = create_training_run(
        recipe="domain",
        dataset_versions=[versions["domain"]],
        base_checkpoint=tiny_base,
        hyperparameters={"steps": 6, "checkpoint_every": 100},
    )
    real_progress = job_services.JobContext.progress

    def progress_then_cancel(ctx, done, total=None, message=""):
        # Stands in for the heartbeat thread (off in tests): the user cancels at step 3.
        if ctx.job.kind == "train" and done == 3 and ctx.job.attempt == 1:
            job_services.request_cancel(ctx.job)
            ctx._cancel.set()
        return real_progress(ctx, done, total, message)

    monkeypatch.setattr(job_services.JobContext, "progress", progress_then_cancel)
    job = _start(run, data_lead, django_capture_on_commit_callbacks)
    assert job.status == Job.Status.CANCELLED
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    saved = sorted(p.name for p in Path(run.output_dir, "checkpoints").iterdir())
    assert saved == ["step-0000003"]
    assert not Checkpoint.objects.filter(training_run=run).exists()

    with django_capture_on_commit_callbacks(execute=True):
        retried = resume_training(run, data_lead)
    assert retried.pk == job.pk and retried.status == Job.Status.QUEUED
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert "resuming from step-0000003" in job.log_tail
    checkpoint = Checkpoint.objects.get(training_run=run)
    assert checkpoint.step == 6
    assert checkpoint.lineage["resumed_from"].endswith("step-0000003")
    run.refresh_from_db()
    assert [p["step"] for p in run.loss_curve] == [1, 2, 3, 4, 5, 6]


@pytest.mark.django_db
def test_a_reported_checkpoint_that_no_longer_exists_is_not_recorded(
    versions, tiny_base, data_lead, no_dispatch, django_capture_on_commit_callbacks, monkeypatch
):
    import shutil

    import training.engine.run as engine_run

    real = engine_run.run_training

    def then_deleted(*args, **kwargs):
        result = real(*args, **kwargs)
        shutil.rmtree(result.checkpoint_path)  # e.g. a cleanup racing the job
        return result

    monkeypatch.setattr(engine_run, "run_training", then_deleted)
    run = create_training_run(
        recipe="domain",
        dataset_versions=[versions["domain"]],
        base_checkpoint=tiny_base,
        hyperparameters=TINY,
    )
    job = _start(run, data_lead, django_capture_on_commit_callbacks)
    assert job.status != Job.Status.SUCCEEDED  # a failed attempt (retried later), not success
    assert "step-0000004, which does not exist" in job.error
    assert not Checkpoint.objects.filter(training_run=run).exists()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED  # not "running" while the job waits to retry
    assert "recording its checkpoint failed" in job.log_tail
