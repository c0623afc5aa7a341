"""Training runs: validate, turn into an engine TrainConfig, execute inside any job, enqueue.

`execute_training_run(run, ctx)` is the one function that trains; the `train` job calls it and so
does the retrain-round orchestrator inside its own job. It resumes from the newest engine
checkpoint in the run's output folder, so a retried or recovered job repeats no finished step.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from curation.models import Dataset, DatasetVersion, Job
from curation.services.jobs import JobCancelled, JobContext, enqueue_job
from training.models import Checkpoint, TrainingRun
from training.services.checkpoints import BaseModelRefused, is_tiny, seed_for_run
from training.services.devices import resolve_device
from training.services.manifests import ManifestRefused, StorageResolver, cache_dir, local_manifest
from training.services.previews import drop_previews_after, import_previews

logger = logging.getLogger(__name__)

Recipe = TrainingRun.Recipe
# Keys of `hyperparameters` the platform reads itself; everything else goes to the engine.
PLATFORM_KEYS = ("loss_log_every",)
# Set on the run (or by the platform), never through hyperparameters.
RESERVED_KEYS = ("recipe", "adapter", "base_model", "output_dir", "datasets")

TINY_DEFAULTS: dict[str, Any] = {
    "resolution": 32,
    "batch_size": 4,
    "steps": 20,
    "learning_rate": 1e-3,
    "checkpoint_every": 10,
    "seed": 0,
    "loss_log_every": 1,
}
MODEL_DEFAULTS: dict[str, Any] = {
    "resolution": 512,
    "batch_size": 4,
    "gradient_accumulation_steps": 1,
    "steps": 1000,
    "learning_rate": 1e-4,
    "lr_scheduler": "constant",
    "checkpoint_every": 100,
    "keep_checkpoints": 3,
    "mixed_precision": "fp16",
    "gradient_checkpointing": True,
    "seed": 0,
    "loss_log_every": 10,
}
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    Recipe.STYLE_TAILORING: {
        "t_s": 500,
        "mix_ratio": 0.5,
        "loss_weights": {"alignment": 1.0, "style": 1.0},
    },
    Recipe.SEQUENTIAL: {"sequential_order": ["alignment", "style"]},
    Recipe.STYLEDROP_ITERATIVE: {
        "styledrop": {
            "iterations": 2,
            "feedback": "clip",
            "top_k": 4,
            "prompts": ["a cat", "a house", "a flower", "a robot"],
            "seeds": [0, 1],
        }
    },
}


class TrainingRunError(ValueError):
    """Bad input for a run; `field` is the form field or dotted hyperparameter at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class TrainingWaiting(Exception):
    """A styledrop_iterative run stopped to wait for human feedback; `details` names the round.

    Nothing failed: the run's state is saved and resuming it later continues at the selection.
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = dict(details or {})


# ---- defaults and roles -----------------------------------------------------------------------


def default_hyperparameters(
    recipe: str = Recipe.STYLE_TAILORING,
    adapter: str = TrainingRun.Adapter.LORA,
    base_checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """What a run uses unless its hyperparameters say otherwise: tiny settings for the tiny
    random model (seconds on a CPU), Stable-Diffusion-sized ones for real models."""
    tiny = is_tiny(base_checkpoint)
    values = dict(TINY_DEFAULTS if tiny else MODEL_DEFAULTS)
    if adapter == TrainingRun.Adapter.FULL:
        values["adapter_params"] = {}
        values["learning_rate"] = 1e-3 if tiny else 1e-5
    elif adapter in (TrainingRun.Adapter.LORA, TrainingRun.Adapter.STYLEDROP):
        values["adapter_params"] = {"rank": 4 if tiny else 16}
    for key, value in RECIPE_DEFAULTS.get(recipe, {}).items():
        values[key] = {**value} if isinstance(value, dict) else value
    if recipe == Recipe.STYLEDROP_ITERATIVE and tiny:
        values["styledrop"] = {**values["styledrop"], "clip_model": "tiny-clip", "top_k": 2}
        values["styledrop"]["sampler"] = {"steps": 4}
    return values


def merged_hyperparameters(
    recipe: str, adapter: str, base_checkpoint: Checkpoint | None, given: dict[str, Any] | None
) -> dict[str, Any]:
    given = dict(given or {})
    if not isinstance(given, dict):
        raise TrainingRunError("hyperparameters", "must be a JSON object")
    for key in RESERVED_KEYS:
        if key in given:
            raise TrainingRunError(
                f"hyperparameters.{key}", "is set on the run itself, not in hyperparameters"
            )
    values = default_hyperparameters(recipe, adapter, base_checkpoint)
    for key, value in given.items():
        if (
            isinstance(value, dict)
            and isinstance(values.get(key), dict)
            and key != "adapter_params"
        ):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return values


def required_roles(recipe: str, hyperparameters: dict[str, Any]) -> dict[str, str]:
    """Engine dataset role → the Dataset kind that fills it, per recipe."""
    if recipe == Recipe.DOMAIN:
        return {"domain": Dataset.Kind.DOMAIN}
    if recipe == Recipe.SEQUENTIAL:
        order = hyperparameters.get("sequential_order") or ["alignment", "style"]
        return {role: role for role in order}
    if recipe == Recipe.STYLE_TAILORING:
        return {"alignment": Dataset.Kind.ALIGNMENT, "style": Dataset.Kind.STYLE}
    if recipe == Recipe.STYLEDROP_ITERATIVE:
        return {"references": Dataset.Kind.STYLE}
    raise TrainingRunError("recipe", f"{recipe!r} is not one of {', '.join(Recipe.values)}")


def assign_roles(
    recipe: str, versions: list[DatasetVersion], hyperparameters: dict[str, Any]
) -> dict[str, DatasetVersion]:
    """Each role's version, refusing drafts, missing kinds, duplicates and unused versions."""
    drafts = [f"{v} (id {v.pk})" for v in versions if not v.is_frozen]
    if drafts:
        raise TrainingRunError(
            "dataset_versions",
            f"only frozen dataset versions can be trained on; {', '.join(drafts)} "
            f"{'is a draft' if len(drafts) == 1 else 'are drafts'} (freeze first)",
        )
    roles = required_roles(recipe, hyperparameters)
    by_kind: dict[str, list[DatasetVersion]] = {}
    for version in versions:
        by_kind.setdefault(version.dataset.kind, []).append(version)
    missing = [kind for kind in dict.fromkeys(roles.values()) if kind not in by_kind]
    if missing:
        got = ", ".join(f"{v} [{v.dataset.kind}]" for v in versions) or "none"
        raise TrainingRunError(
            "dataset_versions",
            f"recipe {recipe} needs a frozen {' and a frozen '.join(missing)} version "
            f"(roles: {', '.join(f'{r}={k}' for r, k in roles.items())}); got {got}",
        )
    for kind, found in by_kind.items():
        if kind not in roles.values():
            raise TrainingRunError(
                "dataset_versions",
                f"recipe {recipe} does not use {kind} versions ({', '.join(map(str, found))}); "
                "remove them",
            )
        if len(found) > 1:
            raise TrainingRunError(
                "dataset_versions",
                f"pick one {kind} version, got {len(found)}: {', '.join(map(str, found))}",
            )
    return {role: by_kind[kind][0] for role, kind in roles.items()}


def _config_dict(
    recipe: str,
    adapter: str,
    base_model: str,
    output_dir: str,
    datasets: dict[str, dict[str, Any]],
    hyperparameters: dict[str, Any],
) -> dict[str, Any]:
    engine_values = {k: v for k, v in hyperparameters.items() if k not in PLATFORM_KEYS}
    return {
        **engine_values,
        "recipe": recipe,
        "adapter": adapter,
        "base_model": base_model,
        "output_dir": output_dir,
        "datasets": datasets,
    }


def validate_run_inputs(
    *,
    recipe: str,
    adapter: str,
    dataset_versions: list[DatasetVersion],
    base_checkpoint: Checkpoint | None,
    hyperparameters: dict[str, Any] | None,
) -> dict[str, Any]:
    """Check everything a run needs before it is saved; returns the merged hyperparameters."""
    from training.engine.config import ConfigError, TrainConfig

    if recipe not in Recipe.values:
        raise TrainingRunError("recipe", f"{recipe!r} is not one of {', '.join(Recipe.values)}")
    if adapter not in TrainingRun.Adapter.values:
        raise TrainingRunError(
            "adapter", f"{adapter!r} is not one of {', '.join(TrainingRun.Adapter.values)}"
        )
    if base_checkpoint is None:
        raise TrainingRunError("base_checkpoint", "is required (register a base model first)")
    values = merged_hyperparameters(recipe, adapter, base_checkpoint, hyperparameters)
    roles = assign_roles(recipe, list(dataset_versions), values)
    placeholder = _config_dict(
        recipe,
        adapter,
        base_checkpoint.path,
        "unused",
        {role: {"manifest": v.manifest_path, "sha256": v.checksum} for role, v in roles.items()},
        values,
    )
    try:
        TrainConfig.from_dict(placeholder)
    except ConfigError as error:
        raise TrainingRunError(f"hyperparameters.{error.field}", str(error)) from error
    every = values.get("loss_log_every")
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise TrainingRunError(
            "hyperparameters.loss_log_every", f"must be a positive integer, got {every!r}"
        )
    return values


# ---- create and configure ----------------------------------------------------------------------


@transaction.atomic
def create_training_run(
    *,
    recipe: str,
    dataset_versions: list[DatasetVersion] | QuerySet[DatasetVersion],
    base_checkpoint: Checkpoint | None,
    adapter: str = TrainingRun.Adapter.LORA,
    hyperparameters: dict[str, Any] | None = None,
    name: str = "",
    user: Any = None,
) -> TrainingRun:
    """A draft run on exact frozen versions, its hyperparameters stored merged with the defaults
    (so the page shows every value the run will use)."""
    versions = list(dataset_versions)
    values = validate_run_inputs(
        recipe=recipe,
        adapter=adapter,
        dataset_versions=versions,
        base_checkpoint=base_checkpoint,
        hyperparameters=hyperparameters,
    )
    run = TrainingRun.objects.create(
        name=name or f"{recipe}/{adapter} on {', '.join(map(str, versions))}"[:160],
        recipe=recipe,
        adapter=adapter,
        base_checkpoint=base_checkpoint,
        hyperparameters=values,
        created_by=user if getattr(user, "pk", None) else None,
    )
    run.dataset_versions.set(versions)
    return run


def runs_dir() -> Path:
    return Path(getattr(settings, "TRAINING_RUNS_DIR", settings.VAR_DIR / "runs"))


def run_output_dir(run: TrainingRun) -> Path:
    """The run's own folder; its creation time is in the name so a database that was reset (ids
    reused) never resumes another run's checkpoints."""
    if run.output_dir:
        return Path(run.output_dir)
    return runs_dir() / f"{run.pk}-{run.created_at:%Y%m%dT%H%M%S%f}"


def _versions(run: TrainingRun) -> list[DatasetVersion]:
    return list(run.dataset_versions.select_related("dataset").order_by("pk"))


def build_train_config(run: TrainingRun) -> Any:
    """The engine TrainConfig for `run`: roles from dataset kinds, manifests as verified local
    files, output under var/runs/<id>/, hyperparameters merged over the defaults."""
    from training.engine.config import ConfigError, DatasetSpec, TrainConfig

    versions = _versions(run)
    values = merged_hyperparameters(
        run.recipe, run.adapter, run.base_checkpoint, run.hyperparameters
    )
    roles = assign_roles(run.recipe, versions, values)
    if run.base_checkpoint is None:
        raise TrainingRunError("base_checkpoint", "is required")
    try:
        base_model, init_from = seed_for_run(run.base_checkpoint, run.adapter)
    except BaseModelRefused as error:
        raise TrainingRunError("base_checkpoint", str(error)) from error
    if init_from is not None:
        values["init_from"] = init_from
    datasets = {}
    for role, version in roles.items():
        try:
            manifest = local_manifest(version)
        except ManifestRefused as error:
            raise TrainingRunError("dataset_versions", str(error)) from error
        datasets[role] = DatasetSpec(
            manifest=str(manifest),
            sha256=version.checksum,
            image_root=None,
            split="train",
            version_id=str(version.pk),
        )
    if values.get("latent_cache_dir") is None:
        values["latent_cache_dir"] = str(cache_dir() / "latents")
    data = _config_dict(
        run.recipe,
        run.adapter,
        str(base_model),
        str(run_output_dir(run)),
        datasets,  # type: ignore[arg-type]
        values,
    )
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as error:
        raise TrainingRunError(f"hyperparameters.{error.field}", str(error)) from error


def run_lineage(run: TrainingRun, job: Job | None = None) -> dict[str, Any]:
    """What the platform adds to the engine's lineage: exact versions, run, job, base checkpoint."""
    base = run.base_checkpoint
    return {
        "platform": {
            "training_run": run.pk,
            "job": job.pk if job is not None else None,
            "base_checkpoint": (
                {"id": base.pk, "name": base.name, "path": base.path} if base is not None else None
            ),
            "dataset_versions": [
                {
                    "id": v.pk,
                    "dataset": v.dataset.name,
                    "kind": v.dataset.kind,
                    "number": v.number,
                    "checksum": v.checksum,
                    "manifest_path": v.manifest_path,
                    "row_count": v.row_count,
                }
                for v in _versions(run)
            ],
        }
    }


# ---- execute ------------------------------------------------------------------------------------


def _set_status(run: TrainingRun, status: str, **fields: Any) -> None:
    run.status = status
    for name, value in fields.items():
        setattr(run, name, value)
    TrainingRun.objects.filter(pk=run.pk).update(status=status, **fields)


class _Progress:
    """The engine's progress callback: job progress, loss curve every N steps, never raising
    (a cancel is picked up by the engine's own should_cancel check, which saves a checkpoint)."""

    def __init__(
        self, run: TrainingRun, ctx: JobContext, every: int, preview_every: int = 0
    ) -> None:
        self.run, self.ctx, self.every = run, ctx, every
        self.preview_every = preview_every

    def __call__(self, step: int, total: int, loss: float) -> None:
        with contextlib.suppress(JobCancelled):
            self.ctx.progress(step, total, f"loss {loss:.4f}")
        if step % self.every == 0 or step == total:
            self.run.loss_curve.append({"step": step, "loss": round(float(loss), 6)})
            TrainingRun.objects.filter(pk=self.run.pk).update(loss_curve=self.run.loss_curve)
        if self.preview_every and step % self.preview_every == 0:
            # The engine writes a step's preview before reporting the step.
            import_previews(self.run, self.run.output_dir)


def _checkpoint_for(run: TrainingRun) -> Checkpoint | None:
    return run.checkpoints.order_by("-step", "-pk").first()


def execute_training_run(run: TrainingRun, ctx: JobContext) -> Checkpoint:
    """Train `run` inside the calling job and return its Checkpoint row.

    Safe to call again after any failure: a finished run returns its checkpoint, an interrupted
    one resumes from the newest engine checkpoint in its output folder. A cancel leaves a
    resumable checkpoint, marks the run cancelled and raises JobCancelled.
    """
    from training.engine.checkpoint import latest_checkpoint

    run = TrainingRun.objects.select_related("base_checkpoint").get(pk=run.pk)
    done = _checkpoint_for(run)
    if run.status == TrainingRun.Status.SUCCEEDED and done is not None:
        ctx.log(f"run {run.pk} already finished: checkpoint {done.name}")
        return done
    try:
        config = build_train_config(run)
    except (TrainingRunError, ManifestRefused) as error:
        _set_status(run, TrainingRun.Status.FAILED)
        ctx.log(f"refused: {error}")
        raise
    output_dir = Path(config.output_dir)
    _set_status(run, TrainingRun.Status.RUNNING, job=ctx.job, output_dir=str(output_dir))
    device = resolve_device(ctx.log)
    resume_from = None
    if run.recipe != Recipe.STYLEDROP_ITERATIVE:
        resume_from = latest_checkpoint(output_dir)
    resumed_step = int(resume_from.name.split("-")[-1]) if resume_from else 0
    # Steps after the last saved checkpoint were lost with the previous attempt: drop their points.
    run.loss_curve = [p for p in run.loss_curve if p.get("step", 0) <= resumed_step]
    TrainingRun.objects.filter(pk=run.pk).update(loss_curve=run.loss_curve)
    drop_previews_after(run, resumed_step)
    ctx.save_state(
        output_dir=str(output_dir), resumed_from=str(resume_from) if resume_from else None
    )
    ctx.log(
        f"training run {run.pk}: {run.recipe}/{run.adapter}, {config.steps} steps on {device}"
        + (f", resuming from {resume_from.name}" if resume_from else "")
    )
    every = int(run.hyperparameters.get("loss_log_every") or 1)
    common = {
        "progress": _Progress(run, ctx, every, config.previews.get("every", 0)),
        "should_cancel": ctx.should_cancel,
        "lineage": run_lineage(run, ctx.job),
        "resolver": StorageResolver.for_versions(_versions(run)),
        "device": device,
    }
    try:
        if run.recipe == Recipe.STYLEDROP_ITERATIVE:
            result = _run_styledrop(run, config, ctx, common)
        else:
            from training.engine.run import run_training

            result = run_training(config, resume_from=resume_from, **common)
    except TrainingWaiting:
        raise
    except Exception as error:
        _set_status(run, TrainingRun.Status.FAILED)
        ctx.log(f"training failed: {error}")
        raise
    if result.status == "cancelled":
        _set_status(run, TrainingRun.Status.CANCELLED)
        ctx.log(f"cancelled at step {result.step}; resume continues from {result.checkpoint_path}")
        raise JobCancelled(f"training run {run.pk} cancelled at step {result.step}")
    import_previews(run, output_dir)
    checkpoint = _record_checkpoint(run, config, result)
    _set_status(run, TrainingRun.Status.SUCCEEDED)
    ctx.log(f"checkpoint {checkpoint.name} at step {checkpoint.step}")
    return checkpoint


def _run_styledrop(run: TrainingRun, config: Any, ctx: JobContext, common: dict[str, Any]) -> Any:
    """StyleDrop's iterations; human feedback comes from a style AnnotationRound per iteration.

    Raises TrainingWaiting (run status `waiting`) while annotators have not finished that
    round; resuming the run later picks up exactly where it stopped.
    """
    from training.engine.styledrop_iterative import (
        FeedbackPending,
        run_styledrop_iterative_training,
    )
    from training.services.feedback import StyleRoundFeedback

    feedback = StyleRoundFeedback(run, log=ctx.log)
    try:
        return run_styledrop_iterative_training(config, human_feedback=feedback, **common)
    except FeedbackPending as pending:
        _set_status(run, TrainingRun.Status.WAITING)
        ctx.log(
            f"iteration {pending.iteration}: {pending}; resume the run once the round is closed"
        )
        ctx.save_state(waiting_for=pending.details)
        raise TrainingWaiting(str(pending), pending.details) from pending


def _record_checkpoint(run: TrainingRun, config: Any, result: Any) -> Checkpoint:
    from training.engine.checkpoint import read_lineage

    if not result.checkpoint_path:
        raise RuntimeError(f"training run {run.pk}: the engine reported no checkpoint")
    path = Path(result.checkpoint_path)
    lineage = {**read_lineage(path), **run_lineage(run, run.job)}
    losses = list(result.losses)
    metrics = {
        "final_loss": losses[-1] if losses else None,
        "min_loss": min(losses) if losses else None,
        "steps": result.step,
        "seconds": round(result.seconds, 3),
        "device": result.device,
        "mixed_precision": result.mixed_precision,
        "skipped_images": len(result.skipped_images),
    }
    with transaction.atomic():
        checkpoint, _ = Checkpoint.objects.update_or_create(
            name=f"run-{run.pk}-{path.name}",
            defaults={
                "path": str(path),
                "base_model": config.base_model,
                "adapter": run.adapter,
                "parent": run.base_checkpoint,
                "training_run": run,
                "config": config.to_dict(),
                "lineage": lineage,
                "metrics": metrics,
                "step": result.step,
            },
        )
        checkpoint.dataset_versions.set(_versions(run))
    return checkpoint


# ---- jobs ---------------------------------------------------------------------------------------


class RunNotStartable(ValueError):
    pass


def enqueue_training(run: TrainingRun, user: Any = None) -> Job:
    """Start (or continue) `run` as a `train` job on the gpu queue."""
    run = TrainingRun.objects.get(pk=run.pk)
    if run.job_id and Job.objects.filter(pk=run.job_id, status__in=Job.ACTIVE).exists():
        raise RunNotStartable(f"training run {run.pk} already has an active job #{run.job_id}")
    if run.status == TrainingRun.Status.SUCCEEDED:
        raise RunNotStartable(f"training run {run.pk} has already succeeded")
    validate_run_inputs(
        recipe=run.recipe,
        adapter=run.adapter,
        dataset_versions=_versions(run),
        base_checkpoint=run.base_checkpoint,
        hyperparameters=run.hyperparameters,
    )
    job = enqueue_job("train", params={"run_id": run.pk}, queue="gpu", user=user, target=run)
    _set_status(run, TrainingRun.Status.QUEUED, job=job)
    return job


def cancel_training(run: TrainingRun) -> Job | None:
    from curation.services.jobs import request_cancel

    if run.job is None:
        return None
    job = request_cancel(run.job)
    if job.status == Job.Status.CANCELLED:
        _set_status(run, TrainingRun.Status.CANCELLED)
    return job


def resume_training(run: TrainingRun, user: Any = None) -> Job:
    """Retry the failed or cancelled job (it resumes from the engine checkpoint), or start a new
    job for a run waiting on feedback or whose job is gone."""
    from curation.services.jobs import retry_job

    run = TrainingRun.objects.select_related("job").get(pk=run.pk)
    job = run.job
    if (
        job is not None
        and job.kind == "train"
        and job.status
        in (
            Job.Status.FAILED,
            Job.Status.CANCELLED,
            Job.Status.LOST,
        )
    ):
        job = retry_job(job)
        _set_status(run, TrainingRun.Status.QUEUED)
        return job
    return enqueue_training(run, user)
