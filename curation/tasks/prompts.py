"""Job handlers `prompts.analyse` and `prompts.split` (queue cpu): both embed every prompt."""

from __future__ import annotations

from curation.models.prompts import PromptSet
from curation.prompts.dedup import DEFAULT_THRESHOLD
from curation.services.jobs import JobContext, job_handler
from curation.services.prompts import analyse_prompt_set, split_prompt_set


def _progress(ctx: JobContext):
    # ctx.progress also checks the cancel flag, so a cancel lands between embedding chunks.
    return lambda done, total: ctx.progress(done, total, f"embedded {done} of {total} prompts")


@job_handler("prompts.analyse", queue="cpu")
def analyse_job(ctx: JobContext) -> dict:
    prompt_set = PromptSet.objects.get(pk=ctx.params["prompt_set_id"])
    threshold = float(ctx.params.get("threshold", DEFAULT_THRESHOLD))
    ctx.log(f"analysing {prompt_set} at cosine >= {threshold}")
    analysis = analyse_prompt_set(prompt_set, threshold, on_progress=_progress(ctx))
    ctx.log(
        f"{analysis['duplicates']} duplicates in {analysis['near_groups']} groups, "
        f"diversity {analysis['diversity'].get('mean_pairwise_distance', 0):.3f}"
    )
    return {key: value for key, value in analysis.items() if key != "largest_groups"}


@job_handler("prompts.split", queue="cpu")
def split_job(ctx: JobContext) -> dict:
    prompt_set = PromptSet.objects.get(pk=ctx.params["prompt_set_id"])
    generation, evaluation = split_prompt_set(
        prompt_set,
        eval_fraction=float(ctx.params.get("eval_fraction", 0.1)),
        seed=int(ctx.params.get("seed", 0)),
        threshold=float(ctx.params.get("threshold", DEFAULT_THRESHOLD)),
        user=ctx.job.created_by,
        on_progress=_progress(ctx),
    )
    ctx.log(f"split {prompt_set} into {generation} and {evaluation}")
    return {"generation_set": generation.pk, "evaluation_set": evaluation.pk}
