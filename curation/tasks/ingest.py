"""Job handler `ingest` (queue cpu): loads the batch by id and runs or resumes it."""

from __future__ import annotations

from curation.models import IngestBatch
from curation.selectors.ingest import ingest_summary
from curation.services.ingest import run_ingest
from curation.services.jobs import JobContext, job_handler

RESULT_REFUSALS = 100


@job_handler("ingest", queue="cpu")
def ingest_job(ctx: JobContext) -> dict:
    # A retried attempt finds the batch in its state; the batch's recorded files say what is left.
    batch_id = ctx.state.get("batch_id") or ctx.params["batch_id"]
    batch = run_ingest(None, None, job_ctx=ctx, batch=IngestBatch.objects.get(pk=batch_id))
    if batch.status == IngestBatch.Status.CANCELLED:
        ctx.check_cancelled()
    return ingest_summary(batch, max_refusals=RESULT_REFUSALS)
