"""Trade-off sweeps: start one, run it inside its job, cancel and resume it.

A sweep trains, from one domain checkpoint, the sequential recipe and Style Tailoring at each
(t_s, mix ratio) with the same hyperparameters, generates every arm and the prompt-engineered
base (the root base model with the style descriptor's words) on the sweep's prompts and seeds,
and scores them with the evaluation CLIP named in settings. The plane, its Pareto front and the
paper's headline table come from `training.engine.toy_world.sweep.sweep_report`.

Each arm's TrainingRun and GenerationBatch are written to `sweep.arms` as soon as they exist, and
both resume themselves, so a retried job skips finished arms and continues an interrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from django.db import transaction

from curation.models import DatasetVersion, Job, PromptSet, StyleDescriptor
from curation.services.jobs import (
    JobCancelled,
    JobContext,
    JobNotRetryable,
    enqueue_job,
    request_cancel,
    retry_job,
)
from training.models import Checkpoint, GenerationBatch, RetrainRound, TradeoffSweep, TrainingRun

JOB_KIND = "tradeoff_sweep"
BASELINE = "prompt_engineered_base"
SEQUENTIAL = "sequential"
# What every arm shares unless the sweep's settings say otherwise: the toy world's scale.
DEFAULT_SETTINGS: dict[str, Any] = {
    "t_s_values": [300, 500, 700],
    "mix_ratios": [0.5],
    "adapter": "full",
    "hyperparameters": {"steps": 40, "batch_size": 8, "learning_rate": 5e-4},
}
SWEEP_ADAPTERS = ("full", "lora")


class SweepConfigError(ValueError):
    """A sweep that cannot run as asked; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class SweepNotRetryable(ValueError):
    pass


def _settings(given: dict[str, Any] | None) -> dict[str, Any]:
    given = dict(given or {})
    values = {
        **DEFAULT_SETTINGS,
        **{k: v for k, v in given.items() if k != "hyperparameters"},
        "hyperparameters": {
            **DEFAULT_SETTINGS["hyperparameters"],
            **given.get("hyperparameters", {}),
        },
    }
    for key in ("t_s_values", "mix_ratios"):
        if not isinstance(values[key], list) or not values[key]:
            raise SweepConfigError(f"settings.{key}", "give a non-empty list")
    for t_s in values["t_s_values"]:
        if not isinstance(t_s, int) or isinstance(t_s, bool) or not 0 < t_s < 1000:
            raise SweepConfigError("settings.t_s_values", f"{t_s!r} is not an integer in 1..999")
    for mix in values["mix_ratios"]:
        if not isinstance(mix, int | float) or isinstance(mix, bool) or not 0 < mix < 1:
            raise SweepConfigError("settings.mix_ratios", f"{mix!r} is not a number in (0, 1)")
    if values["adapter"] not in SWEEP_ADAPTERS:
        raise SweepConfigError(
            "settings.adapter", f"{values['adapter']!r} is not one of {', '.join(SWEEP_ADAPTERS)}"
        )
    return values


def planned_arms(sweep_settings: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(arm name, recipe, hyperparameters) of every trained arm, all with the same budget."""
    from training.engine.toy_world.sweep import tailoring_arms

    shared = dict(sweep_settings["hyperparameters"])
    arms = [(SEQUENTIAL, "sequential", shared)]
    for name, t_s, mix in tailoring_arms(
        sweep_settings["t_s_values"], sweep_settings["mix_ratios"]
    ):
        arms.append((name, "style_tailoring", {**shared, "t_s": t_s, "mix_ratio": mix}))
    return arms


def _check_inputs(
    base_checkpoint: Checkpoint, versions: list[DatasetVersion], sweep_settings: dict[str, Any]
) -> None:
    from training.services.runs.inputs import TrainingRunError, validate_run_inputs

    for _, recipe, hyperparameters in planned_arms(sweep_settings):
        try:
            validate_run_inputs(
                recipe=recipe,
                adapter=sweep_settings["adapter"],
                dataset_versions=versions,
                base_checkpoint=base_checkpoint,
                hyperparameters=hyperparameters,
            )
        except TrainingRunError as error:
            field = error.field.replace("hyperparameters", "settings.hyperparameters")
            raise SweepConfigError(field, str(error).split(": ", 1)[-1]) from error


@transaction.atomic
def start_tradeoff_sweep(
    *,
    base_checkpoint: Checkpoint,
    dataset_versions: Sequence[DatasetVersion],
    eval_prompt_set: PromptSet,
    seeds: Sequence[int] = (0, 1),
    settings: dict[str, Any] | None = None,
    style_descriptor: StyleDescriptor | None = None,
    retrain_round: RetrainRound | None = None,
    user: Any = None,
    name: str = "",
) -> TradeoffSweep:
    """Check the inputs, create the sweep and enqueue its job (gpu queue)."""
    versions = list(dataset_versions)
    values = _settings(settings)
    _check_inputs(base_checkpoint, versions, values)
    if not eval_prompt_set.prompts.exists():
        raise SweepConfigError("eval_prompt_set", f"{eval_prompt_set} has no prompts")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SweepConfigError("seeds", "give distinct seeds (at least one)")
    sweep = TradeoffSweep.objects.create(
        name=name or f"trade-off sweep from {base_checkpoint.name}"[:160],
        base_checkpoint=base_checkpoint,
        eval_prompt_set=eval_prompt_set,
        style_descriptor=style_descriptor or StyleDescriptor.objects.filter(name="sticker").first(),
        retrain_round=retrain_round,
        seeds=seeds,
        settings=values,
        created_by=user if getattr(user, "pk", None) else None,
    )
    sweep.dataset_versions.set(versions)
    job = enqueue_job(JOB_KIND, params={"sweep_id": sweep.pk}, user=user, target=sweep)
    TradeoffSweep.objects.filter(pk=sweep.pk).update(job=job)
    sweep.job = job
    return sweep


def start_sweep_for_round(
    round_: RetrainRound, *, settings: dict[str, Any] | None = None, user: Any = None
) -> TradeoffSweep:
    """A sweep on a retrain round's inputs: its base checkpoint, versions, eval prompts, seeds."""
    return start_tradeoff_sweep(
        base_checkpoint=round_.base_checkpoint,
        dataset_versions=list(round_.dataset_versions.all()),
        eval_prompt_set=round_.eval_prompt_set,
        seeds=round_.seeds or [0, 1],
        settings=settings,
        style_descriptor=round_.style_descriptor,
        retrain_round=round_,
        user=user,
        name=f"{round_.name} · trade-off sweep"[:160],
    )


def cancel_sweep(sweep: TradeoffSweep) -> Job:
    if sweep.job is None or sweep.job.status not in Job.ACTIVE:
        raise SweepNotRetryable(f"{sweep}: not running, nothing to cancel")
    return request_cancel(sweep.job)


def resume_sweep(sweep: TradeoffSweep) -> Job:
    """Run a failed or cancelled sweep's job again; finished arms are not redone."""
    if sweep.job is None:
        raise SweepNotRetryable(f"{sweep}: has no job to resume")
    try:
        job = retry_job(sweep.job)
    except JobNotRetryable as error:
        raise SweepNotRetryable(f"{sweep}: {error}") from error
    TradeoffSweep.objects.filter(pk=sweep.pk).update(status=TradeoffSweep.Status.QUEUED, error="")
    return job


class _StageContext:
    """The job context as one stage of the sweep sees it: its progress is a slice of the
    sweep's, its messages say which arm; everything else is the job's own."""

    SCALE = 1000

    def __init__(self, ctx: JobContext, index: int, stages: int, label: str) -> None:
        self._ctx, self._index, self._stages, self._label = ctx, index, stages, label

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        fraction = min(1.0, done / total) if total else 0.0
        overall = int(self.SCALE * (self._index + fraction) / self._stages)
        self._ctx.progress(overall, self.SCALE, f"{self._label}: {message}"[:255])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def _record_arm(sweep: TradeoffSweep, arm: str, **values: Any) -> None:
    with transaction.atomic():
        locked = TradeoffSweep.objects.select_for_update().get(pk=sweep.pk)
        locked.arms = {**locked.arms, arm: {**locked.arms.get(arm, {}), **values}}
        locked.save(update_fields=["arms", "updated_at"])
    sweep.arms = locked.arms


def _train_arm(
    sweep: TradeoffSweep, arm: str, recipe: str, hyperparameters: dict[str, Any], ctx: Any
) -> Checkpoint:
    from training.services.runs.execute import execute_training_run
    from training.services.runs.inputs import create_training_run

    recorded = sweep.arms.get(arm, {})
    if recorded.get("checkpoint"):
        return Checkpoint.objects.get(pk=recorded["checkpoint"])
    run = TrainingRun.objects.filter(pk=recorded.get("training_run")).first()
    if run is None:
        run = create_training_run(
            recipe=recipe,
            adapter=sweep.settings["adapter"],
            dataset_versions=sweep.dataset_versions.all(),
            base_checkpoint=sweep.base_checkpoint,
            hyperparameters=hyperparameters,
            name=f"{sweep.name} · {arm}"[:160],
            user=sweep.created_by,
        )
        _record_arm(sweep, arm, training_run=run.pk)
    checkpoint = execute_training_run(run, ctx)
    _record_arm(sweep, arm, checkpoint=checkpoint.pk)
    return checkpoint


def _generate_arm(
    sweep: TradeoffSweep,
    arm: str,
    checkpoint: Checkpoint,
    descriptor: StyleDescriptor | None,
    ctx: Any,
) -> GenerationBatch:
    from training.services.generation import create_generation_batch, execute_generation_batch

    batch = GenerationBatch.objects.filter(pk=sweep.arms.get(arm, {}).get("batch")).first()
    if batch is None:
        batch = create_generation_batch(
            checkpoint,
            sweep.eval_prompt_set,
            seeds=list(sweep.seeds),
            style_descriptor=descriptor,
            name=f"{sweep.name} · {arm}"[:160],
        )
        _record_arm(sweep, arm, batch=batch.pk)
    if batch.status != GenerationBatch.Status.SUCCEEDED:
        execute_generation_batch(batch, ctx)
    return batch


def _scored_arm(bundle: Any, batch: GenerationBatch, references: list[Any]) -> dict[str, Any]:
    """The engine's per-image scores of one arm: text against the bare prompt (never the
    baseline's style words), style against the references, diversity per prompt."""
    from training.engine.toy_world.evaluate import score_arm
    from training.services.evaluation import open_image

    generations = batch.generations.select_related("prompt", "image").order_by("prompt_id", "seed")
    items = [(g.prompt.text, g.seed, open_image(g.image.storage_key)) for g in generations]
    if not items:
        raise RuntimeError(f"generation batch {batch.pk} holds no images to score")
    scored = score_arm(bundle, items, references)
    scored["images"] = [image for _, _, image in items]
    return scored


def run_tradeoff_sweep(sweep: TradeoffSweep, ctx: JobContext) -> dict[str, Any]:
    """Train, generate and score every arm (skipping what an earlier attempt finished), then
    write the report. Called by the `tradeoff_sweep` job."""
    from training.engine.toy_world.sweep import style_passes, sweep_report
    from training.services.eval_scorer import load_eval_scorer
    from training.services.evaluation import root_checkpoint, style_reference_images

    sweep = TradeoffSweep.objects.select_related("base_checkpoint", "style_descriptor").get(
        pk=sweep.pk
    )
    TradeoffSweep.objects.filter(pk=sweep.pk).update(status=TradeoffSweep.Status.RUNNING, error="")
    arms = planned_arms(sweep.settings)
    stages = 2 * len(arms) + 2  # train and generate each arm, generate the baseline, score
    try:
        batches: dict[str, GenerationBatch] = {}
        for index, (arm, recipe, hyperparameters) in enumerate(arms):
            ctx.log(f"sweep {sweep.pk}: arm {arm}")
            checkpoint = _train_arm(
                sweep, arm, recipe, hyperparameters, _StageContext(ctx, 2 * index, stages, arm)
            )
            batches[arm] = _generate_arm(
                sweep, arm, checkpoint, None, _StageContext(ctx, 2 * index + 1, stages, arm)
            )
        batches[BASELINE] = _generate_arm(
            sweep,
            BASELINE,
            root_checkpoint(sweep.base_checkpoint),
            sweep.style_descriptor,
            _StageContext(ctx, stages - 2, stages, "prompt-engineered base"),
        )
        _StageContext(ctx, stages - 1, stages, "scoring").progress(0, 1, "every arm")
        scorer = load_eval_scorer()
        references = style_reference_images(sweep.dataset_versions.all())
        if not references:
            raise RuntimeError("the sweep's style version holds no images to compare style with")
        scored = {arm: _scored_arm(scorer.bundle, b, references) for arm, b in batches.items()}
        passes = {arm: style_passes(scorer.bundle, s, s.pop("images")) for arm, s in scored.items()}
        report = sweep_report(scored, passes, settings=sweep.settings, seeds=list(sweep.seeds))
        report["scorer"] = scorer.describe()
        report["batches"] = {arm: b.pk for arm, b in batches.items()}
    except JobCancelled:
        TradeoffSweep.objects.filter(pk=sweep.pk).update(status=TradeoffSweep.Status.CANCELLED)
        raise
    except Exception as error:
        TradeoffSweep.objects.filter(pk=sweep.pk).update(
            status=TradeoffSweep.Status.FAILED, error=str(error)[:4000]
        )
        raise
    TradeoffSweep.objects.filter(pk=sweep.pk).update(
        status=TradeoffSweep.Status.SUCCEEDED, report=report
    )
    with contextlib.suppress(JobCancelled):
        _StageContext(ctx, stages - 1, stages, "scoring").progress(1, 1, "done")
    return {
        "sweep": sweep.pk,
        "pareto_front": report["pareto_front"],
        "best_run": report["headline"]["best_run"],
        "style_tailoring_dominates_sequential": report["style_tailoring_dominates_sequential"],
    }
