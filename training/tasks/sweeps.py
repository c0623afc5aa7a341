"""Job handler for trade-off sweeps (`tradeoff_sweep`, gpu queue)."""

from __future__ import annotations

from curation.services.jobs import JobContext, Param, job_handler
from training.models import TradeoffSweep
from training.services.sweeps import JOB_KIND, run_tradeoff_sweep


@job_handler(
    JOB_KIND,
    queue="gpu",
    params={"sweep_id": Param(int, required=True, help="the id of the trade-off sweep")},
)
def tradeoff_sweep_job(ctx: JobContext) -> dict:
    return run_tradeoff_sweep(TradeoffSweep.objects.get(pk=ctx.params["sweep_id"]), ctx)
