"""Job handler `export_checkpoint` (queue gpu, it loads the weights): one checkpoint as
diffusers or kohya files, zipped for download."""

from __future__ import annotations

from curation.services.jobs import JobContext, Param, job_handler
from training.services.checkpoint_exports import JOB_KIND, execute_export


@job_handler(
    JOB_KIND,
    queue="gpu",
    params={
        "checkpoint_id": Param(int, required=True, help="the id of the checkpoint to export"),
        "format": Param(str, required=True, help="diffusers or kohya"),
        "use_ema": Param(bool, help="the EMA weights when the run kept them (default true)"),
        "base_model": Param(str, help="the base model folder, if it moved since training"),
    },
)
def export_checkpoint_job(ctx: JobContext) -> dict:
    return execute_export(ctx.params, ctx)
