"""Runs and batches follow their job's final status when the handler could not say it itself
(cancelled while queued, worker lost, out of retries)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from curation.models import Job
from curation.signals import job_finished

FINAL = {
    Job.Status.CANCELLED: "cancelled",
    Job.Status.FAILED: "failed",
    Job.Status.LOST: "failed",
}


@receiver(job_finished, dispatch_uid="training.follow_job_status")
def follow_job_status(sender: Any, job: Job, **_: Any) -> None:
    from training.models import GenerationBatch, TradeoffSweep, TrainingRun

    status = FINAL.get(job.status)
    if status is None:
        return
    if job.kind == "train":
        TrainingRun.objects.filter(job=job).exclude(status=TrainingRun.Status.WAITING).exclude(
            status=TrainingRun.Status.SUCCEEDED
        ).update(status=status)
    elif job.kind == "tradeoff_sweep":
        TradeoffSweep.objects.filter(job=job).exclude(status=TradeoffSweep.Status.SUCCEEDED).update(
            status=status
        )
    elif job.kind == "generate":
        GenerationBatch.objects.filter(job=job).exclude(
            status=GenerationBatch.Status.SUCCEEDED
        ).update(status=status)
