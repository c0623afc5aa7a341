"""Training a run inside any job: `execute_training_run(run, ctx)` is the one function that
trains; the `train` job calls it and so does the retrain-round orchestrator inside its own job.
It resumes from the newest engine checkpoint in the run's output folder, so a retried or
recovered job repeats no finished step.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from django.db import transaction

from curation.services.jobs import JobCancelled, JobContext
from training.models import Checkpoint, TrainingRun
from training.services.devices import resolve_device
from training.services.manifests import ManifestRefused, StorageResolver
from training.services.previews import drop_previews_after, import_previews
from training.services.runs.config import build_train_config, run_lineage, run_versions
from training.services.runs.inputs import Recipe, TrainingRunError


class TrainingWaiting(Exception):
    """A styledrop_iterative run stopped to wait for human feedback; `details` names the round.

    Nothing failed: the run's state is saved and resuming it later continues at the selection.
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = dict(details or {})


def set_run_status(run: TrainingRun, status: str, **fields: Any) -> None:
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
        set_run_status(run, TrainingRun.Status.FAILED)
        ctx.log(f"refused: {error}")
        raise
    output_dir = Path(config.output_dir)
    set_run_status(run, TrainingRun.Status.RUNNING, job=ctx.job, output_dir=str(output_dir))
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
        "resolver": StorageResolver.for_versions(run_versions(run)),
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
        set_run_status(run, TrainingRun.Status.FAILED)
        ctx.log(f"training failed: {error}")
        raise
    if result.status == "cancelled":
        set_run_status(run, TrainingRun.Status.CANCELLED)
        ctx.log(f"cancelled at step {result.step}; resume continues from {result.checkpoint_path}")
        raise JobCancelled(f"training run {run.pk} cancelled at step {result.step}")
    try:
        import_previews(run, output_dir)
        checkpoint = _record_checkpoint(run, config, result)
    except Exception as error:
        # The job may retry, which resumes from the saved checkpoint; until then the run is not
        # running, and saying so keeps the admin from showing a run nobody is training.
        set_run_status(run, TrainingRun.Status.FAILED)
        ctx.log(f"training finished but recording its checkpoint failed: {error}")
        raise
    set_run_status(run, TrainingRun.Status.SUCCEEDED)
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
        set_run_status(run, TrainingRun.Status.WAITING)
        ctx.log(
            f"iteration {pending.iteration}: {pending}; resume the run once the round is closed"
        )
        ctx.save_state(waiting_for=pending.details)
        raise TrainingWaiting(str(pending), pending.details) from pending


def _record_checkpoint(run: TrainingRun, config: Any, result: Any) -> Checkpoint:
    from training.engine.checkpoint import is_checkpoint, read_lineage

    if not result.checkpoint_path:
        raise RuntimeError(f"training run {run.pk}: the engine reported no checkpoint")
    path = Path(result.checkpoint_path)
    if not is_checkpoint(path):
        # keep_checkpoints or a cleanup removed it: a row pointing at nothing is worse than none.
        raise RuntimeError(
            f"training run {run.pk}: the engine reported checkpoint {path}, which does not exist"
        )
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
        checkpoint.dataset_versions.set(run_versions(run))
    return checkpoint
