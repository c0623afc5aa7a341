"""Job handler for generation batches."""

from __future__ import annotations

from curation.services.jobs import JobContext, job_handler
from training.models import GenerationBatch
from training.services.generation import execute_generation_batch


@job_handler("generate", queue="gpu")
def generate_job(ctx: JobContext) -> dict:
    batch = GenerationBatch.objects.get(pk=ctx.params["batch_id"])
    return execute_generation_batch(batch, ctx)
