"""Job handler for FineStyle concept scaling (`finestyle.scale_concepts`, gpu queue)."""

from __future__ import annotations

from curation.models import DatasetVersion
from curation.services.jobs import JobContext, job_handler
from training.models import Checkpoint
from training.services.concept_scaling import JOB_KIND, scale_concepts


@job_handler(JOB_KIND, queue="gpu")
def scale_concepts_job(ctx: JobContext) -> dict:
    done = ctx.state.get("scaled_version_id")
    if done is not None:  # a retry after the version was frozen must not freeze a second one
        scaled = DatasetVersion.objects.get(pk=done)
    else:
        params = ctx.params
        scaled = scale_concepts(
            DatasetVersion.objects.get(pk=params["version_id"]),
            params.get("words") or {},
            base_checkpoint=Checkpoint.objects.get(pk=params["base_checkpoint_id"]),
            threshold=float(params.get("threshold", 0.5)),
            min_area=float(params.get("min_area", 0.02)),
            descriptor=params.get("descriptor", ""),
            user=ctx.job.created_by,
            progress=ctx.progress,
            log=ctx.log,
        )
        ctx.save_state(scaled_version_id=scaled.pk)
    crops = sum(1 for row in scaled.lineage.get("rows", []) for c in row["crops"] if c["kept"])
    return {
        "source_version": scaled.lineage["source_version"]["id"],
        "version": scaled.pk,
        "rows": scaled.row_count,
        "crops": crops,
    }
