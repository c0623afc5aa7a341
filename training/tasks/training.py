"""Job handlers for training: `train` (one run) and `retrain_if_new_version` (scheduled)."""

from __future__ import annotations

from curation.services.jobs import JobContext, Param, job_handler
from training.models import TrainingRun
from training.services.runs.execute import TrainingWaiting, execute_training_run


@job_handler("train", queue="gpu")
def train_job(ctx: JobContext) -> dict:
    run = TrainingRun.objects.get(pk=ctx.params["run_id"])
    try:
        checkpoint = execute_training_run(run, ctx)
    except TrainingWaiting as waiting:
        # Not a failure: the run continues when it is resumed after the round closes.
        return {"training_run": run.pk, "waiting": str(waiting), **waiting.details}
    return {"training_run": run.pk, "checkpoint": checkpoint.pk, "step": checkpoint.step}


@job_handler(
    "retrain_if_new_version",
    queue="default",
    params={"template_run": Param(int, required=True, help="the id of the training run to repeat")},
)
def retrain_if_new_version_job(ctx: JobContext) -> dict:
    from training.services.schedules import retrain_if_new_version

    return retrain_if_new_version(ctx.params, log=ctx.log)
