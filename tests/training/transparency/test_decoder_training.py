"""Transparency decoder training through the job path: metrics on held-out rows, lineage,
refusals, cancel and resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.models import Job
from curation.services import jobs as job_services
from training.models import Checkpoint
from training.services.transparency import (
    ADAPTER,
    JOB_KIND,
    TransparencyRunError,
    create_decoder_run,
    evaluate_decoder,
)

from .conftest import make_shapes_version

TRAIN = {"steps": 80, "batch_size": 8, "learning_rate": 3e-3, "resolution": 16}


def _run(base, version, user, capture, **hyperparameters) -> Job:
    with capture(execute=True):
        job = create_decoder_run(base, version, {**TRAIN, **hyperparameters}, user=user)
    assert job.kind == JOB_KIND and job.queue == "gpu"
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    return job


@pytest.mark.django_db
def test_decoder_job_learns_alpha_and_records_held_out_metrics(
    tiny_base, rgba_version, data_lead, no_dispatch, django_capture_on_commit_callbacks
):
    from training.engine.transparency import load_decoder

    job = _run(tiny_base, rgba_version, data_lead, django_capture_on_commit_callbacks)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.percent == 100 and "held-out alpha IoU" in job.log_tail

    decoder = Checkpoint.objects.get(pk=job.result["checkpoint"])
    assert decoder.adapter == ADAPTER and decoder.parent == tiny_base
    assert list(decoder.dataset_versions.all()) == [rgba_version]
    metrics = decoder.metrics
    assert metrics["held_out_images"] == 10 and metrics["held_out_rule"] == "split"
    assert metrics["train_images"] == 40 and metrics["steps"] == 80
    assert metrics["alpha_mae"] < 0.6 * metrics["alpha_mae_before"]
    assert metrics["alpha_iou"] >= 0.6 > metrics["alpha_iou_before"]
    assert job.result["alpha_iou"] == metrics["alpha_iou"]

    # Lineage like any checkpoint: exact version checksum, job, base model; a named component.
    platform = decoder.lineage["platform"]
    assert platform["job"] == job.pk and platform["base_checkpoint"]["id"] == tiny_base.pk
    assert platform["dataset_versions"][0]["checksum"] == rgba_version.checksum
    assert decoder.lineage["dataset"]["sha256"] == rgba_version.checksum
    path = Path(decoder.path)
    assert path.name == "vae_alpha" and load_decoder(path).config.out_channels == 4
    assert not (path.parent / "resume").exists()

    # Evaluation on another RGBA set, reported on the decoder checkpoint.
    other = make_shapes_version(6, 0, seed=5)
    result = evaluate_decoder(decoder, other, resolution=16)
    decoder.refresh_from_db()
    assert decoder.metrics["evaluations"][str(other.pk)]["images"] == 6
    assert 0 <= result["mae"] < metrics["alpha_mae_before"] and result["iou"] > 0.5


@pytest.mark.django_db
def test_non_rgba_or_unfrozen_versions_are_refused_with_the_reason(tiny_base, data_lead):
    rgb = make_shapes_version(4, 0, rgba=False)
    with pytest.raises(TransparencyRunError, match=r"4 of 4 rows are not RGBA") as refused:
        create_decoder_run(tiny_base, rgb, user=data_lead)
    assert refused.value.field == "rgba_version" and "rgba_only=True" in str(refused.value)

    draft = make_shapes_version(4, 0, freeze=False, seed=1)
    with pytest.raises(TransparencyRunError, match="is a draft; freeze it first"):
        create_decoder_run(tiny_base, draft, user=data_lead)

    frozen = make_shapes_version(4, 0, seed=2)
    with pytest.raises(TransparencyRunError, match=r"hyperparameters\.stepz: unknown setting"):
        create_decoder_run(tiny_base, frozen, {"stepz": 3})
    with pytest.raises(TransparencyRunError, match=r"resolution: must be a multiple of 8"):
        create_decoder_run(tiny_base, frozen, {"resolution": 20})
    assert not Job.objects.filter(kind=JOB_KIND).exists()


@pytest.mark.django_db
def test_cancel_then_retry_resumes_and_a_saved_decoder_is_recorded_once(
    tiny_base, data_lead, no_dispatch, django_capture_on_commit_callbacks, monkeypatch
):
    version = make_shapes_version(8, 2, seed=3)
    real_progress = job_services.JobContext.progress

    def progress_then_cancel(ctx, done, total=None, message=""):
        # Stands in for the heartbeat thread (off in tests): the user cancels at step 3.
        if ctx.job.kind == JOB_KIND and done == 3 and ctx.job.attempt == 1:
            job_services.request_cancel(ctx.job)
            ctx._cancel.set()
        return real_progress(ctx, done, total, message)

    monkeypatch.setattr(job_services.JobContext, "progress", progress_then_cancel)
    job = _run(
        tiny_base, version, data_lead, django_capture_on_commit_callbacks, steps=6, batch_size=4
    )
    assert job.status == Job.Status.CANCELLED and "cancelled at step 3" in job.log_tail
    assert Path(job.state["resume_dir"], "state.pt").is_file()
    assert not Checkpoint.objects.filter(adapter=ADAPTER).exists()

    with django_capture_on_commit_callbacks(execute=True):
        job_services.retry_job(job)
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert "resuming" in job.log_tail
    decoder = Checkpoint.objects.get(adapter=ADAPTER)
    assert decoder.lineage["resumed_from_step"] == 3 and decoder.step == 6

    # The row lost after the decoder was saved (a crash): a retry records it, nothing retrains.
    metrics = decoder.metrics
    decoder.delete()
    with django_capture_on_commit_callbacks(execute=True):
        Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED)
        job_services.retry_job(job)
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and "already saved" in job.log_tail
    assert Checkpoint.objects.get(adapter=ADAPTER).metrics == metrics
