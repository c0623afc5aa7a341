"""Transparency decoders on the platform (issue 9): train, record, evaluate, generate with one.

A decoder run is a `train_transparency` Job plus the Checkpoint it makes, not a TrainingRun: a
TrainingRun's recipes, dataset roles, adapters and `train` job all describe UNet training, while a
decoder run has one RGBA version, no adapter and trains only the VAE decoder. The Job row already
carries what a person follows and controls (parameters, progress, log, cancel, retry); the
Checkpoint (adapter "transparency_decoder", parent = the base checkpoint) carries the lineage and
the alpha metrics on held-out rows.

Files: each run writes `<models dir>/transparency/job-<id>/vae_alpha/` (a diffusers AutoencoderKL
folder with `lineage.json`, the engine's named component) and, while training, `resume/` beside
it, so a retried or recovered job continues from its last resume state.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from django.db import transaction

from curation.models import DatasetVersion, Job
from curation.services.jobs import JobCancelled, JobContext, enqueue_job
from training.models import Checkpoint
from training.services.checkpoints import is_base_model, is_tiny, models_dir

logger = logging.getLogger(__name__)

ADAPTER = "transparency_decoder"
JOB_KIND = "train_transparency"
COMPONENT = "vae_alpha"  # training.engine.transparency.COMPONENT_NAME, without importing torch

TINY_DEFAULTS: dict[str, Any] = {
    "resolution": 32,
    "steps": 60,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "alpha_weight": 1.0,
    "checkpoint_every": 20,
    "holdout_fraction": 0.2,
    "seed": 0,
}
MODEL_DEFAULTS: dict[str, Any] = {
    "resolution": 512,
    "steps": 2000,
    "batch_size": 4,
    "learning_rate": 1e-4,
    "alpha_weight": 1.0,
    "checkpoint_every": 200,
    "holdout_fraction": 0.2,
    "seed": 0,
}
POSITIVE_INTS = ("steps", "batch_size", "resolution")
EXAMPLES_SHOWN = 3


class TransparencyRunError(ValueError):
    """Bad input for a decoder run; `field` names the form field or hyperparameter at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


# ---- validation ---------------------------------------------------------------------------------


def decoder_defaults(base_checkpoint: Checkpoint | None = None) -> dict[str, Any]:
    """Tiny settings (seconds on a CPU) for the tiny random model, SD-sized ones otherwise."""
    return dict(TINY_DEFAULTS if is_tiny(base_checkpoint) else MODEL_DEFAULTS)


def merged_hyperparameters(
    base_checkpoint: Checkpoint | None, given: dict[str, Any] | None
) -> dict[str, Any]:
    """The defaults overridden by `given`, checked field by field against AlphaTrainConfig."""
    if given is not None and not isinstance(given, dict):
        raise TransparencyRunError("hyperparameters", "must be a JSON object")
    values = decoder_defaults(base_checkpoint)
    unknown = sorted(set(given or {}) - set(values))
    if unknown:
        raise TransparencyRunError(
            f"hyperparameters.{unknown[0]}", f"unknown setting (known: {sorted(values)})"
        )
    values.update(given or {})
    for key in POSITIVE_INTS + ("checkpoint_every", "seed"):
        value = values[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise TransparencyRunError(
                f"hyperparameters.{key}", f"must be an integer >= 0, got {value!r}"
            )
    for key in POSITIVE_INTS:
        if values[key] == 0:
            raise TransparencyRunError(f"hyperparameters.{key}", "must be at least 1")
    if values["resolution"] % 8:
        raise TransparencyRunError(
            "hyperparameters.resolution", f"must be a multiple of 8, got {values['resolution']}"
        )
    for key in ("learning_rate", "alpha_weight", "holdout_fraction"):
        value = values[key]
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise TransparencyRunError(
                f"hyperparameters.{key}", f"must be a number >= 0, got {value!r}"
            )
    if values["holdout_fraction"] >= 1:
        raise TransparencyRunError(
            "hyperparameters.holdout_fraction", f"must be below 1, got {values['holdout_fraction']}"
        )
    return values


def vae_source(checkpoint: Checkpoint) -> Path:
    """The diffusers folder whose VAE a decoder trained from `checkpoint` starts from.

    Training recipes never change the VAE, so a trained checkpoint shares its base model's.
    """
    from training.engine.base_model import BaseModelError, check_base_model

    if checkpoint.adapter == ADAPTER:
        raise TransparencyRunError(
            "base_checkpoint",
            f"{checkpoint.name} is itself a transparency decoder; pick the model it belongs to",
        )
    folder = checkpoint.path if is_base_model(checkpoint) else checkpoint.base_model
    try:
        return check_base_model(folder)
    except BaseModelError as error:
        raise TransparencyRunError(
            "base_checkpoint", f"{checkpoint.name}: no base model folder with a VAE ({error})"
        ) from error


def check_rgba_version(version: DatasetVersion) -> int:
    """Refuse a draft or any row without real alpha; returns the row count."""
    label = f"dataset version {version} (id {version.pk})"
    if not version.is_frozen:
        raise TransparencyRunError(
            "rgba_version",
            f"{label} is a draft; freeze it first, so the decoder's lineage names an immutable "
            "manifest",
        )
    total = version.items.count()
    if not total:
        raise TransparencyRunError("rgba_version", f"{label} has no rows")
    opaque = version.items.filter(image__has_alpha=False)
    count = opaque.count()
    if count:
        examples = ", ".join(
            sha[:12] for sha in opaque.values_list("image__sha256", flat=True)[:EXAMPLES_SHOWN]
        )
        raise TransparencyRunError(
            "rgba_version",
            f"{label}: {count} of {total} rows are not RGBA (image has_alpha is false, e.g. "
            f"{examples}); the decoder learns alpha only from images with a real alpha channel. "
            "Build the version from transparent images (add_images_to_version(..., "
            "rgba_only=True)) and freeze it",
        )
    return total


def validate_decoder_inputs(
    base_checkpoint: Checkpoint | None,
    rgba_version: DatasetVersion | None,
    hyperparameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a decoder run needs, checked before a job exists; returns the merged settings."""
    if base_checkpoint is None:
        raise TransparencyRunError("base_checkpoint", "is required")
    if rgba_version is None:
        raise TransparencyRunError("rgba_version", "is required")
    vae_source(base_checkpoint)
    check_rgba_version(rgba_version)
    return merged_hyperparameters(base_checkpoint, hyperparameters)


# ---- start ---------------------------------------------------------------------------------------


def create_decoder_run(
    base_checkpoint: Checkpoint,
    rgba_version: DatasetVersion,
    hyperparameters: dict[str, Any] | None = None,
    user: Any = None,
) -> Job:
    """Validate and enqueue a `train_transparency` job on the gpu queue."""
    values = validate_decoder_inputs(base_checkpoint, rgba_version, hyperparameters)
    return enqueue_job(
        JOB_KIND,
        params={
            "base_checkpoint": base_checkpoint.pk,
            "rgba_version": rgba_version.pk,
            "hyperparameters": values,
        },
        queue="gpu",
        user=user,
        target=base_checkpoint,
    )


def decoder_jobs(base_checkpoint: Checkpoint | None = None) -> Any:
    jobs = Job.objects.filter(kind=JOB_KIND)
    if base_checkpoint is not None:
        jobs = jobs.filter(target_type="training.checkpoint", target_id=base_checkpoint.pk)
    return jobs


# ---- execute -------------------------------------------------------------------------------------


def run_folder(job: Job) -> Path:
    # The creation time keeps a reused id (a database rebuilt beside old files) from resuming
    # another job's state; it never changes across retries of the same job.
    return models_dir() / "transparency" / f"job-{job.pk}-{job.created_at:%Y%m%dT%H%M%S%f}"


def checkpoint_name(base: Checkpoint, job: Job) -> str:
    return f"{base.name[:120]}-{COMPONENT}-job{job.pk}"


def _lineage(base: Checkpoint, version: DatasetVersion, job: Job) -> dict[str, Any]:
    from training.engine.lineage import code_version

    return {
        "recipe": "transparency_decoder",
        "code_version": code_version(),
        "platform": {
            "job": job.pk,
            "base_checkpoint": {"id": base.pk, "name": base.name, "path": base.path},
            "dataset_versions": [
                {
                    "id": version.pk,
                    "dataset": version.dataset.name,
                    "kind": version.dataset.kind,
                    "number": version.number,
                    "checksum": version.checksum,
                    "manifest_path": version.manifest_path,
                    "row_count": version.row_count,
                }
            ],
        },
    }


def _metrics(record: dict[str, Any]) -> dict[str, Any]:
    after, before = record.get("metrics_after") or {}, record.get("metrics_before") or {}
    held_out = record.get("held_out") or {}
    return {
        "alpha_iou": after.get("iou"),
        "alpha_mae": after.get("mae"),
        "alpha_iou_before": before.get("iou"),
        "alpha_mae_before": before.get("mae"),
        "held_out_images": record.get("eval_images", 0),
        "held_out_rule": held_out.get("rule"),
        "train_images": record.get("train_images", 0),
        "skipped_images": len(record.get("skipped_images") or []),
        "steps": record.get("steps"),
        "final_loss": record.get("final_loss"),
        "seconds": record.get("seconds"),
        "device": record.get("device"),
    }


def _record_checkpoint(
    base: Checkpoint, version: DatasetVersion, job: Job, output: Path
) -> Checkpoint:
    record = json.loads((output / "lineage.json").read_text())
    with transaction.atomic():
        checkpoint, _ = Checkpoint.objects.update_or_create(
            name=checkpoint_name(base, job),
            defaults={
                "path": str(output),
                "base_model": record.get("base_model", ""),
                "adapter": ADAPTER,
                "parent": base,
                "training_run": None,
                "config": {**(record.get("config") or {}), "component": COMPONENT},
                "lineage": record,
                "metrics": _metrics(record),
                "step": int(record.get("steps") or 0),
            },
        )
        checkpoint.dataset_versions.set([version])
    return checkpoint


def execute_decoder_training(params: dict[str, Any], ctx: JobContext) -> Checkpoint:
    """Train a decoder inside the calling job and return its Checkpoint row.

    Safe to call again after any failure: a recorded decoder is returned as is, a saved but
    unrecorded one is recorded, an interrupted one resumes from its last resume state. A cancel
    saves a resume state and raises JobCancelled.
    """
    from training.engine.transparency import AlphaTrainConfig, train_transparency_decoder
    from training.services.devices import resolve_device
    from training.services.manifests import StorageResolver, local_manifest

    job = ctx.job
    base = Checkpoint.objects.get(pk=params["base_checkpoint"])
    version = DatasetVersion.objects.select_related("dataset").get(pk=params["rgba_version"])
    done = Checkpoint.objects.filter(name=checkpoint_name(base, job), adapter=ADAPTER).first()
    if done is not None:
        ctx.log(f"decoder already recorded as checkpoint {done.name}")
        return done
    try:
        values = validate_decoder_inputs(base, version, params.get("hyperparameters"))
        source = vae_source(base)
        manifest = local_manifest(version)
    except ValueError as error:
        ctx.log(f"refused: {error}")
        raise
    config = AlphaTrainConfig(**{k: values[k] for k in (f.name for f in fields(AlphaTrainConfig))})
    folder = run_folder(job)
    output = folder / COMPONENT
    if (output / "lineage.json").is_file():
        ctx.log(f"decoder already saved at {output}; recording it")
        return _record_checkpoint(base, version, job, output)

    device = resolve_device(ctx.log)
    resume_dir = folder / "resume"
    ctx.save_state(output=str(output), resume_dir=str(resume_dir))
    ctx.log(
        f"transparency decoder from {base.name} on {version} ({version.row_count} rows), "
        f"{config.steps} steps at {config.resolution}px on {device}"
        + (", resuming" if (resume_dir / "state.pt").is_file() else "")
    )

    def progress(step: int, total: int, loss: float) -> None:
        # The engine checks should_cancel itself and saves a resume state first.
        with contextlib.suppress(JobCancelled):
            ctx.progress(step, total, f"loss {loss:.4f}")

    lineage = _lineage(base, version, job)
    path, result = train_transparency_decoder(
        source,
        manifest,
        version.checksum,
        output,
        config,
        resolver=StorageResolver.for_versions([version]),
        lineage=lineage,
        progress=progress,
        should_cancel=ctx.should_cancel,
        device=device,
        resume_dir=resume_dir,
    )
    if path is None:
        ctx.log(f"cancelled at step {result.step}; retrying the job resumes there")
        raise JobCancelled(f"decoder training job {job.pk} cancelled at step {result.step}")
    _add_to_lineage(
        path,
        final_loss=result.losses[-1] if result.losses else None,
        seconds=round(result.seconds, 3),
        device=str(device),
    )
    checkpoint = _record_checkpoint(base, version, job, path)
    metrics = checkpoint.metrics

    def shown(key: str) -> str:
        return "n/a" if metrics[key] is None else f"{metrics[key]:.3f}"

    ctx.log(
        f"checkpoint {checkpoint.name}: held-out alpha IoU {shown('alpha_iou_before')} -> "
        f"{shown('alpha_iou')}, MAE {shown('alpha_mae_before')} -> {shown('alpha_mae')} "
        f"on {metrics['held_out_images']} images"
    )
    if not metrics["held_out_images"]:
        ctx.log("WARNING: no held-out rows (the version has a single image), so no alpha metrics")
    return checkpoint


def _add_to_lineage(path: Path, **values: Any) -> None:
    record = json.loads((path / "lineage.json").read_text())
    (path / "lineage.json").write_text(json.dumps({**record, **values}, indent=2, default=str))


# ---- evaluation ----------------------------------------------------------------------------------


def evaluate_decoder(
    decoder: Checkpoint, version: DatasetVersion, *, resolution: int | None = None
) -> dict[str, Any]:
    """Alpha IoU and MAE of a decoder checkpoint on every row of a frozen RGBA version (an
    evaluation set), stored under `metrics["evaluations"][<version id>]` and returned."""
    import io

    from PIL import Image as PILImage

    from curation.services.storage import read_bytes
    from training.engine.transparency import (
        alpha_metrics,
        load_decoder,
        predict_alpha,
        rgba_to_tensors,
    )

    if decoder.adapter != ADAPTER:
        raise TransparencyRunError("decoder", f"{decoder.name} is not a transparency decoder")
    check_rgba_version(version)
    size = resolution or int((decoder.config or {}).get("resolution") or 512)
    model = load_decoder(decoder.path)
    pairs, skipped = [], []
    for item in version.items.select_related("image").order_by("image__sha256"):
        try:
            picture = PILImage.open(io.BytesIO(read_bytes(item.image.storage_key)))
            pairs.append(rgba_to_tensors(picture, size))
        except Exception as error:  # one unreadable image must not stop the evaluation
            skipped.append(f"{item.image.sha256[:12]}: {error}")
    if not pairs:
        raise TransparencyRunError("rgba_version", f"{version}: no readable image ({skipped})")
    import torch

    rgb = torch.stack([p[0] for p in pairs])
    alpha = torch.stack([p[1] for p in pairs])
    result = {
        **alpha_metrics(predict_alpha(model, rgb), alpha),
        "images": len(pairs),
        "skipped": skipped,
        "resolution": size,
        "version": str(version),
        "checksum": version.checksum,
    }
    metrics = dict(decoder.metrics or {})
    metrics["evaluations"] = {**metrics.get("evaluations", {}), str(version.pk): result}
    Checkpoint.objects.filter(pk=decoder.pk).update(metrics=metrics)
    decoder.metrics = metrics
    return result


# ---- generation ----------------------------------------------------------------------------------


def _vae_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def decoder_folder(reference: Any, checkpoint: Checkpoint) -> str:
    """The decoder folder a generation batch's `sampler["transparency_decoder"]` names.

    The reference is a decoder Checkpoint id (or a folder path, as the engine takes). Refused
    with GenerationBatchError when it is not a decoder or its latent space differs from the
    batch checkpoint's VAE (its latents would decode to noise).
    """
    from training.services.generation import GenerationBatchError

    field_name = "sampler.transparency_decoder"
    if isinstance(reference, bool):
        raise GenerationBatchError(field_name, f"expected a checkpoint id, got {reference!r}")
    if isinstance(reference, int) or (isinstance(reference, str) and reference.isdigit()):
        row = Checkpoint.objects.filter(pk=int(reference)).first()
        if row is None:
            raise GenerationBatchError(field_name, f"no checkpoint with id {reference}")
        if row.adapter != ADAPTER:
            raise GenerationBatchError(
                field_name,
                f"checkpoint {row.name} (id {row.pk}) is not a transparency decoder "
                f"(adapter {row.adapter or 'base model'!r})",
            )
        folder = Path(row.path)
    elif isinstance(reference, str) and reference:
        folder = Path(reference)
    else:
        raise GenerationBatchError(field_name, f"expected a checkpoint id, got {reference!r}")
    decoder_config = _vae_config(folder)
    if decoder_config.get("out_channels") != 4:
        raise GenerationBatchError(
            field_name, f"{folder} is not a saved transparency decoder (no 4-channel config.json)"
        )
    base = Path(checkpoint.path if is_base_model(checkpoint) else checkpoint.base_model)
    vae_config = _vae_config(base / "vae")
    for key in ("latent_channels", "block_out_channels"):
        if vae_config and vae_config.get(key) != decoder_config.get(key):
            raise GenerationBatchError(
                field_name,
                f"{folder} decodes a different latent space than {checkpoint.name}'s VAE "
                f"({key} {decoder_config.get(key)} vs {vae_config.get(key)})",
            )
    return str(folder)


def has_real_alpha(picture: Any) -> bool:
    """Some pixel is not fully opaque: the rule ingestion uses for `Image.has_alpha`."""
    if "A" not in picture.getbands():
        return False
    return picture.getchannel("A").getextrema()[0] < 255
