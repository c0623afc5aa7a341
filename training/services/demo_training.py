"""Demo stages: train the tiny base model on a frozen domain version, then generate from it.

Each stage runs its real job handler in this process (a Job row is created and executed here,
never dispatched), so the demo shows the same Job records, progress and logs a worker would
produce, without a worker or a GPU.
"""

from __future__ import annotations

from typing import Any

from curation.models import DatasetVersion, Job, PromptSet, StyleDescriptor
from curation.services.jobs import execute_job
from training.models import Checkpoint, GenerationBatch
from training.services.checkpoints import ensure_tiny_base_checkpoint, is_toy_world
from training.services.generation import create_generation_batch
from training.services.runs.inputs import create_training_run

DEMO_TRAIN_STEPS = 10
DEMO_SAMPLER = {"steps": 4, "resolution": 32}


def run_job_inline(kind: str, params: dict[str, Any], *, user: Any, target: Any) -> Job:
    """Create and run one attempt of a job here; raise with its error if it did not succeed."""
    job = Job.objects.create(
        kind=kind,
        queue="gpu",
        params=params,
        max_attempts=1,
        created_by=user if getattr(user, "pk", None) else None,
        target_type=target._meta.label_lower,
        target_id=target.pk,
    )
    execute_job(job.pk)
    job.refresh_from_db()
    if job.status != Job.Status.SUCCEEDED:
        raise RuntimeError(f"{kind} job {job.pk} {job.status}: {job.error[-1500:]}")
    return job


def demo_train_domain(
    domain_version: DatasetVersion,
    user: Any,
    *,
    steps: int = DEMO_TRAIN_STEPS,
    base: Checkpoint | None = None,
    adapter: str = "lora",
    learning_rate: float | None = None,
) -> Checkpoint:
    """A `domain` run (default LoRA) of `base` (default the tiny random base model; the demo gives
    the toy world's pre-trained base) on `domain_version` (32 px, a few steps)."""
    base = base or ensure_tiny_base_checkpoint()
    hyperparameters: dict[str, Any] = {"steps": steps, "checkpoint_every": max(1, steps // 2)}
    if learning_rate is not None:
        hyperparameters["learning_rate"] = learning_rate
    run = create_training_run(
        recipe="domain",
        adapter=adapter,
        dataset_versions=[domain_version],
        base_checkpoint=base,
        hyperparameters=hyperparameters,
        name=f"demo: domain {'LoRA' if adapter == 'lora' else adapter} on {domain_version}",
        user=user,
    )
    job = run_job_inline("train", {"run_id": run.pk}, user=user, target=run)
    return Checkpoint.objects.get(pk=job.result["checkpoint"])


def demo_generate(
    checkpoint: Checkpoint,
    prompt_set: PromptSet,
    user: Any,
    seeds: list[int] | None = None,
    *,
    style_descriptor: StyleDescriptor | None = None,
    auto_round_kinds: list[str] | None = None,
) -> GenerationBatch:
    """Every prompt of `prompt_set` × `seeds` (default [0, 1]) at 32 px with the checkpoint's
    default sampler (4 steps for the tiny random model, the toy world's own for its models)."""
    batch = create_generation_batch(
        checkpoint,
        prompt_set,
        list(seeds if seeds is not None else [0, 1]),
        sampler=None if is_toy_world(checkpoint) else dict(DEMO_SAMPLER),
        style_descriptor=style_descriptor,
        auto_round_kinds=auto_round_kinds,
        name=f"demo: {checkpoint.name} on {prompt_set}",
    )
    run_job_inline("generate", {"batch_id": batch.pk}, user=user, target=batch)
    batch.refresh_from_db()
    return batch
