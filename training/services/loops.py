"""The closed loop: start a retrain round and advance it one job per step.

Each step runs as a job of kind `retrain.step` (train, evaluate and generate on the `gpu` queue,
the rest on `default`). When a step succeeds the next one is enqueued; when it fails the round
shows which step, and retrying that step's job continues the chain without redoing the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from curation.models import DatasetVersion, PromptSet, StyleDescriptor
from curation.services.jobs import JobContext, enqueue_job
from training.models import Checkpoint, RetrainRound, RoundStep

logger = logging.getLogger(__name__)

STEP_QUEUES = {
    "train": "gpu",
    "evaluate": "gpu",
    "generate": "gpu",
    "push_rounds": "default",
    "notify": "default",
}
DEFAULT_SEEDS = [0, 1]


class RoundConfigError(ValueError):
    pass


def validate_round_inputs(dataset_versions: list[DatasetVersion], recipe: str) -> None:
    unfrozen = [str(v) for v in dataset_versions if not v.is_frozen]
    if unfrozen:
        raise RoundConfigError(f"dataset versions must be frozen: {', '.join(unfrozen)}")
    kinds = {v.dataset.kind for v in dataset_versions}
    if recipe in ("style_tailoring", "sequential") and not {"alignment", "style"} <= kinds:
        raise RoundConfigError(
            f"recipe {recipe} needs a frozen alignment and a frozen style version; got {sorted(kinds)}"
        )


@transaction.atomic
def start_retrain_round(
    *,
    base_checkpoint: Checkpoint,
    dataset_versions: list[DatasetVersion],
    prompt_set: PromptSet,
    eval_prompt_set: PromptSet,
    recipe: str = "style_tailoring",
    adapter: str = "lora",
    hyperparameters: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    style_descriptor: StyleDescriptor | None = None,
    user: Any = None,
    name: str = "",
) -> RetrainRound:
    """Create the round and its steps and enqueue the first step."""
    unfrozen = [str(v) for v in dataset_versions if not v.is_frozen]
    if unfrozen:
        raise RoundConfigError(f"dataset versions must be frozen: {', '.join(unfrozen)}")
    kinds = {v.dataset.kind for v in dataset_versions}
    if recipe in ("style_tailoring", "sequential") and not {"alignment", "style"} <= kinds:
        raise RoundConfigError(
            f"recipe {recipe} needs a frozen alignment and a frozen style version; got {sorted(kinds)}"
        )
    number = RetrainRound.objects.count() + 1
    round_ = RetrainRound.objects.create(
        name=name or f"round {number}: {recipe}/{adapter}",
        recipe=recipe,
        adapter=adapter,
        hyperparameters=hyperparameters or {},
        base_checkpoint=base_checkpoint,
        prompt_set=prompt_set,
        eval_prompt_set=eval_prompt_set,
        style_descriptor=style_descriptor,
        seeds=list(seeds if seeds is not None else DEFAULT_SEEDS),
        created_by=user if getattr(user, "pk", None) else None,
    )
    round_.dataset_versions.set(dataset_versions)
    RoundStep.objects.bulk_create(
        RoundStep(round=round_, name=name_, position=i)
        for i, name_ in enumerate(RetrainRound.STEPS)
    )
    _enqueue_step(round_.steps.get(position=0), user)
    return round_


class StepNotRetryable(ValueError):
    """Why a round has no step to retry, worded for the person who asked."""


def retry_failed_step(round_: RetrainRound, step_name: str | None = None) -> RoundStep:
    """Run the round's failed step (or the named one) again; the chain continues from it."""
    from curation.services.jobs import JobNotRetryable, retry_job

    steps = round_.steps.filter(status=RoundStep.Status.FAILED).select_related("job")
    if step_name:
        steps = steps.filter(name=step_name)
    step = steps.order_by("position").first()
    if step is None:
        named = f"step {step_name!r}" if step_name else "any step"
        raise StepNotRetryable(f"{round_}: {named} has not failed; nothing to retry")
    if step.job is None:
        raise StepNotRetryable(f"{round_}: step {step.name} has no job to retry")
    try:
        retry_job(step.job)
    except JobNotRetryable as exc:
        raise StepNotRetryable(f"{round_}: step {step.name}: {exc}") from exc
    RoundStep.objects.filter(pk=step.pk).update(status=RoundStep.Status.PENDING, error="")
    RetrainRound.objects.filter(pk=round_.pk).update(state=RetrainRound.State.RUNNING)
    step.refresh_from_db()
    return step


def _enqueue_step(step: RoundStep, user: Any = None) -> None:
    job = enqueue_job(
        "retrain.step",
        params={"step_id": step.pk},
        queue=STEP_QUEUES[step.name],
        user=user,
        target=step.round,
    )
    RoundStep.objects.filter(pk=step.pk).update(job=job, status=RoundStep.Status.PENDING, error="")


def run_step(step: RoundStep, ctx: JobContext) -> dict[str, Any]:
    """Run one step; called by the `retrain.step` job handler."""
    round_ = step.round
    RoundStep.objects.filter(pk=step.pk).update(
        status=RoundStep.Status.RUNNING, started_at=timezone.now()
    )
    RetrainRound.objects.filter(pk=round_.pk).update(state=RetrainRound.State.RUNNING)
    try:
        output = STEP_FUNCTIONS[step.name](round_, ctx)
    except Exception as exc:
        RoundStep.objects.filter(pk=step.pk).update(
            status=RoundStep.Status.FAILED, finished_at=timezone.now(), error=str(exc)[:4000]
        )
        RetrainRound.objects.filter(pk=round_.pk).update(state=RetrainRound.State.FAILED)
        raise
    RoundStep.objects.filter(pk=step.pk).update(
        status=RoundStep.Status.SUCCEEDED, finished_at=timezone.now(), output=output, error=""
    )
    following = round_.steps.filter(position__gt=step.position).order_by("position").first()
    if following is None:
        RetrainRound.objects.filter(pk=round_.pk).update(state=RetrainRound.State.WAITING)
    elif following.status != RoundStep.Status.SUCCEEDED:
        _enqueue_step(following, round_.created_by)
    return output


def _train(round_: RetrainRound, ctx: JobContext) -> dict[str, Any]:
    from training.services.runs.execute import execute_training_run
    from training.services.runs.inputs import create_training_run

    run = round_.training_run
    if run is None:
        hyperparameters = {k: v for k, v in round_.hyperparameters.items() if k != "eval_sampler"}
        run = create_training_run(
            recipe=round_.recipe,
            adapter=round_.adapter,
            dataset_versions=round_.dataset_versions.all(),
            base_checkpoint=round_.base_checkpoint,
            hyperparameters=hyperparameters,
            name=f"{round_.name} training",
            user=round_.created_by,
        )
        RetrainRound.objects.filter(pk=round_.pk).update(training_run=run)
    checkpoint = execute_training_run(run, ctx)
    RetrainRound.objects.filter(pk=round_.pk).update(checkpoint=checkpoint)
    return {"training_run": run.pk, "checkpoint": checkpoint.pk}


def _evaluate(round_: RetrainRound, ctx: JobContext) -> dict[str, Any]:
    from training.services.evaluation import evaluate_round

    report = evaluate_round(round_, ctx)
    RetrainRound.objects.filter(pk=round_.pk).update(report=report)
    return {"metrics": _headline(report)}


def _headline(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Text, style and diversity per arm, rounded: what a timeline row or a notification shows."""
    return {
        arm: {
            k: round(v, 4)
            for k in ("text_score", "style_score", "diversity")
            if (v := data.get(k)) is not None
        }
        for arm, data in report.get("summary", {}).items()
    }


def _generate(round_: RetrainRound, ctx: JobContext) -> dict[str, Any]:
    from training.models import GenerationBatch
    from training.services.generation import execute_generation_batch

    batch = round_.generation_batch
    if batch is None:
        batch = GenerationBatch.objects.create(
            name=f"{round_.name} generations",
            checkpoint=round_.checkpoint,
            prompt_set=round_.prompt_set,
            style_descriptor=round_.style_descriptor,
            seeds=round_.seeds,
        )
        RetrainRound.objects.filter(pk=round_.pk).update(generation_batch=batch)
    execute_generation_batch(batch, ctx)
    return {"generation_batch": batch.pk, "generations": batch.generations.count()}


def _push_rounds(round_: RetrainRound, ctx: JobContext) -> dict[str, Any]:
    """Alignment and style rounds on the new generations, and pairwise A/B rounds of the new
    checkpoint against the previous one and the prompt-engineered base on the eval prompts."""
    from curation.services.rounds.create import create_pairwise_round, create_round
    from curation.services.rounds.push import push_round

    created = {r.name: r for r in round_.rating_rounds()}
    planned = []
    batch = round_.generation_batch
    for kind in ("alignment", "style"):
        name = f"{round_.name} · {kind}"
        planned.append(
            created.get(name)
            or create_round(name=name, kind=kind, generation_batch=batch, user=round_.created_by)
        )
    eval_batches = (round_.report or {}).get("batches", {})
    new_batch = eval_batches.get("new")
    for arm in ("previous", "prompt_engineered_base"):
        other = eval_batches.get(arm)
        name = f"{round_.name} · A/B vs {arm.replace('_', ' ')}"
        if new_batch and other:
            from training.models import GenerationBatch

            planned.append(
                created.get(name)
                or create_pairwise_round(
                    GenerationBatch.objects.get(pk=new_batch),
                    GenerationBatch.objects.get(pk=other),
                    name=name,
                    user=round_.created_by,
                )
            )
    for rating_round in planned:
        push_round(rating_round, log=ctx.log)
    return {"rating_rounds": {r.name: r.pk for r in planned}}


def _notify(round_: RetrainRound, ctx: JobContext) -> dict[str, Any]:
    from django.core.mail import send_mail

    headline = _headline(round_.report or {})
    message = f"{round_.name} finished: checkpoint {round_.checkpoint}, metrics {headline}; the next rating rounds are in Label Studio."
    ctx.log(message)
    recipients = [round_.created_by.email] if round_.created_by and round_.created_by.email else []
    if recipients:
        send_mail(
            f"[platform] {round_.name} is ready", message, None, recipients, fail_silently=True
        )
    return {"notified": recipients, "message": message}


STEP_FUNCTIONS: dict[str, Callable[[RetrainRound, JobContext], dict[str, Any]]] = {
    "train": _train,
    "evaluate": _evaluate,
    "generate": _generate,
    "push_rounds": _push_rounds,
    "notify": _notify,
}
