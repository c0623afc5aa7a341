"""Runs as jobs: enqueue one on the gpu queue, cancel it, resume it."""

from __future__ import annotations

from typing import Any

from curation.models import Job
from curation.services.jobs import enqueue_job
from training.models import TrainingRun
from training.services.runs.config import run_versions
from training.services.runs.execute import set_run_status
from training.services.runs.inputs import validate_run_inputs


class RunNotStartable(ValueError):
    """The run cannot be started now: it has an active job, or it already succeeded."""


def enqueue_training(run: TrainingRun, user: Any = None) -> Job:
    """Start (or continue) `run` as a `train` job on the gpu queue."""
    run = TrainingRun.objects.get(pk=run.pk)
    if run.job_id and Job.objects.filter(pk=run.job_id, status__in=Job.ACTIVE).exists():
        raise RunNotStartable(f"training run {run.pk} already has an active job #{run.job_id}")
    if run.status == TrainingRun.Status.SUCCEEDED:
        raise RunNotStartable(f"training run {run.pk} has already succeeded")
    validate_run_inputs(
        recipe=run.recipe,
        adapter=run.adapter,
        dataset_versions=run_versions(run),
        base_checkpoint=run.base_checkpoint,
        hyperparameters=run.hyperparameters,
    )
    job = enqueue_job("train", params={"run_id": run.pk}, queue="gpu", user=user, target=run)
    set_run_status(run, TrainingRun.Status.QUEUED, job=job)
    return job


def cancel_training(run: TrainingRun) -> Job | None:
    from curation.services.jobs import request_cancel

    if run.job is None:
        return None
    job = request_cancel(run.job)
    if job.status == Job.Status.CANCELLED:
        set_run_status(run, TrainingRun.Status.CANCELLED)
    return job


def resume_training(run: TrainingRun, user: Any = None) -> Job:
    """Retry the failed or cancelled job (it resumes from the engine checkpoint), or start a new
    job for a run waiting on feedback or whose job is gone."""
    from curation.services.jobs import retry_job

    run = TrainingRun.objects.select_related("job").get(pk=run.pk)
    job = run.job
    if (
        job is not None
        and job.kind == "train"
        and job.status
        in (
            Job.Status.FAILED,
            Job.Status.CANCELLED,
            Job.Status.LOST,
        )
    ):
        job = retry_job(job)
        set_run_status(run, TrainingRun.Status.QUEUED)
        return job
    return enqueue_training(run, user)
