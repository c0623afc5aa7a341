"""Job handler for transparency decoder training (issue 9)."""

from __future__ import annotations

from curation.services.jobs import JobContext, job_handler
from training.services.transparency import JOB_KIND, execute_decoder_training


@job_handler(JOB_KIND, queue="gpu")
def train_transparency_job(ctx: JobContext) -> dict:
    checkpoint = execute_decoder_training(ctx.params, ctx)
    return {
        "checkpoint": checkpoint.pk,
        "name": checkpoint.name,
        "alpha_iou": checkpoint.metrics.get("alpha_iou"),
        "alpha_mae": checkpoint.metrics.get("alpha_mae"),
    }
