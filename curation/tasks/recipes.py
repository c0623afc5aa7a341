"""Job handler `recipe_run` (queue cpu): loads the RecipeRun by id and runs it."""

from __future__ import annotations

from curation.models import RecipeRun
from curation.services.jobs import JobContext, job_handler


@job_handler("recipe_run", queue="cpu")
def recipe_run_job(ctx: JobContext) -> dict:
    from curation.services.recipes import mark_run_failed, run_recipe_job

    run = RecipeRun.objects.get(pk=ctx.params["run_id"])
    try:
        run = run_recipe_job(run, progress=ctx.progress, should_cancel=ctx.should_cancel)
    except Exception as exc:
        mark_run_failed(run.pk, f"{type(exc).__name__}: {exc}")
        raise
    ctx.log(
        f"{run}: {run.stats['candidates']} scored, {run.stats['above_threshold']} above "
        f"threshold {run.stats['threshold']}"
    )
    return {k: v for k, v in run.stats.items() if k != "lf"}
