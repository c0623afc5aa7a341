"""Job handler for retrain-round steps."""

from curation.services.jobs import JobContext, job_handler
from training.models import RoundStep
from training.services.loops import run_step


@job_handler("retrain.step")
def retrain_step(ctx: JobContext) -> dict:
    step = RoundStep.objects.select_related("round").get(pk=ctx.params["step_id"])
    return run_step(step, ctx)
