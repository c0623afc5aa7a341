"""Checkpoint rows for base models, and turning any checkpoint into a base model folder.

A base model is a Checkpoint without a training run: its `path` is a local diffusers folder the
engine loads directly. A trained checkpoint is an engine folder (adapter weights over a base);
training on top of one first merges it into a plain diffusers folder ("materialises" it), once,
so every recipe and adapter can start from any checkpoint the platform has made.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from training.models import Checkpoint

logger = logging.getLogger(__name__)

TINY_BASE_NAME = "tiny-base"
# Single-file checkpoints: UNet tensors (SD, SDXL) or MMDiT tensors (SD3) under these prefixes.
SINGLE_FILE_PREFIXES = ("model.diffusion_model.",)


class BaseModelRefused(ValueError):
    """A path given as a base model is not one the engine can load."""


def models_dir() -> Path:
    return Path(getattr(settings, "TRAINING_MODELS_DIR", settings.VAR_DIR / "models"))


def is_base_model(checkpoint: Checkpoint) -> bool:
    return not checkpoint.adapter


def _flagged_in_lineage(checkpoint: Checkpoint | None, flag: str) -> bool:
    """Whether `checkpoint` or a checkpoint it was trained from carries `flag` in its config."""
    while checkpoint is not None:
        if (checkpoint.config or {}).get(flag):
            return True
        checkpoint = checkpoint.parent
    return False


def is_tiny(checkpoint: Checkpoint | None) -> bool:
    """Tiny random models (tests, demo) get tiny default hyperparameters."""
    return _flagged_in_lineage(checkpoint, "tiny")


def is_toy_world(checkpoint: Checkpoint | None) -> bool:
    """Models of the toy world (its base and what was trained from it) sample like it."""
    return _flagged_in_lineage(checkpoint, "toy_world")


def _inspect(path: Path) -> Any:
    """The engine's ModelFolder (family, parts, variant, size), or BaseModelRefused naming the
    missing or unknown part."""
    from training.engine.errors import BaseModelError
    from training.engine.families import inspect_model_folder

    try:
        return inspect_model_folder(path)
    except BaseModelError as error:
        raise BaseModelRefused(str(error)) from error


def _check_diffusers_folder(path: Path) -> None:
    _inspect(path)


def weights_checksum(root: Path, files: list[str]) -> str:
    """sha256 over (relative name, sha256 of bytes) of every weight file: one identity for a
    folder's weights, whatever the order the file system lists them in."""
    from training.engine.data import file_sha256

    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode())
        digest.update(file_sha256(root / name).encode())
    return digest.hexdigest()


def _convert_single_file(path: Path, name: str, config_folder: str | Path | None) -> Path:
    """A single-file checkpoint → a diffusers folder under var/models/<name>, with the pipeline
    class of the config folder's family (SD, SDXL or SD3).

    Offline, diffusers cannot fetch the architecture config a single file lacks, so a local
    diffusers folder of the same architecture must be given as `config_folder`.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as error:  # safetensors raises several types for a bad header
        raise BaseModelRefused(
            f"base model {path}: not a readable .safetensors file: {error}"
        ) from error
    if not any(k.startswith(SINGLE_FILE_PREFIXES) for k in keys):
        raise BaseModelRefused(
            f"base model {path}: no 'model.diffusion_model.*' tensors, so not a single-file Stable "
            f"Diffusion checkpoint ({len(keys)} tensors, e.g. {keys[:3]}); LoRA or adapter files "
            "are not base models"
        )
    if config_folder is None:
        raise BaseModelRefused(
            f"base model {path}: a single-file checkpoint needs config_folder= (a local diffusers "
            "folder of the same architecture), since no config can be downloaded here"
        )
    from training.engine.families import get_family

    family = get_family(_inspect(Path(config_folder)).family)
    target = models_dir() / name
    try:
        pipeline = family.pipeline_type().from_single_file(
            str(path), config=str(config_folder), local_files_only=True
        )
    except Exception as error:
        raise BaseModelRefused(
            f"base model {path}: diffusers could not convert it with the {family.name} config "
            f"folder {config_folder}: {error}"
        ) from error
    _save_pipeline_atomically(pipeline, target)
    return target


def _save_pipeline_atomically(pipeline: Any, target: Path) -> None:
    temporary = target.with_name(f"{target.name}.tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    pipeline.save_pretrained(temporary, safe_serialization=True)
    if target.exists():
        shutil.rmtree(target)
    temporary.rename(target)


def register_base_model(
    path: str | Path, name: str, *, config_folder: str | Path | None = None, tiny: bool = False
) -> Checkpoint:
    """A Checkpoint row for a local diffusers folder (or single-file .safetensors, converted),
    recording its family, weight variant, size and checksum.

    Registering the same name again updates its path, so re-running a setup script is harmless.
    """
    if not name or not str(name).strip():
        raise BaseModelRefused("name: a base model needs a name")
    source = Path(path).expanduser().resolve()
    if not source.exists():
        raise BaseModelRefused(f"base model {source}: no such file or folder")
    if source.is_file():
        if source.suffix != ".safetensors":
            raise BaseModelRefused(
                f"base model {source}: expected a diffusers folder or a .safetensors file"
            )
        folder = _convert_single_file(source, name, config_folder)
        fmt = "single_file"
    else:
        folder = source
        fmt = "diffusers"
    found = _inspect(folder)
    checkpoint, _ = Checkpoint.objects.update_or_create(
        name=name,
        defaults={
            "path": str(folder),
            "base_model": str(folder),
            "adapter": "",
            "config": {
                "kind": "base",
                "format": fmt,
                "source": str(source),
                "tiny": tiny,
                "family": found.family,
                "pipeline_class": found.pipeline_class,
                "variant": found.variant,
                "size_bytes": found.size_bytes,
                "weights_sha256": weights_checksum(found.path, found.weight_files),
                "parts": found.parts,
            },
            "lineage": {"base_model": str(source), "family": found.family},
        },
    )
    return checkpoint


def ensure_tiny_base_checkpoint(name: str = TINY_BASE_NAME, seed: int = 0) -> Checkpoint:
    """The tiny random base model (about 1.7 M parameters, 32 px), written once under var/models."""
    existing = Checkpoint.objects.filter(name=name).first()
    if existing is not None:
        try:
            _check_diffusers_folder(Path(existing.path))
            return existing
        except BaseModelRefused:
            logger.warning(
                "checkpoint %s: folder %s is gone; writing it again", name, existing.path
            )
    from training.engine.tiny import save_tiny_base_model

    target = models_dir() / name
    try:
        _check_diffusers_folder(target)
    except BaseModelRefused:
        temporary = target.with_name(f"{target.name}.tmp")
        if temporary.exists():
            shutil.rmtree(temporary)
        save_tiny_base_model(temporary, seed=seed)
        if target.exists():
            shutil.rmtree(target)
        temporary.rename(target)
    with transaction.atomic():
        checkpoint = register_base_model(target, name, tiny=True)
        checkpoint.config = {**checkpoint.config, "seed": seed, "resolution": 32}
        checkpoint.save(update_fields=["config", "updated_at"])
    return checkpoint


def _adapter(checkpoint: Checkpoint) -> Any:
    from training.engine.adapters import get_adapter

    try:
        return get_adapter(checkpoint.adapter)
    except KeyError as error:
        raise BaseModelRefused(
            f"base_checkpoint {checkpoint.name}: adapter {checkpoint.adapter!r} is not one the "
            "engine knows"
        ) from error


def seed_for_run(checkpoint: Checkpoint, adapter: str) -> tuple[Path, str | None]:
    """(base model folder, init_from) for a run of `adapter` seeded by `checkpoint`: a merged
    folder when the checkpoint's adapter folds into the weights; otherwise the checkpoint's own
    base model, the run continuing its adapter (`init_from`), which needs the same adapter."""
    if is_base_model(checkpoint) or _adapter(checkpoint).merge is not None:
        return materialize_base_model(checkpoint), None
    if _adapter(checkpoint).load is not _adapter_named(adapter).load:
        raise BaseModelRefused(
            f"base_checkpoint {checkpoint.name}: its {checkpoint.adapter!r} adapter cannot be "
            f"merged into a base model, so it seeds only a {checkpoint.adapter!r} run (this run "
            f"trains {adapter!r})"
        )
    from training.engine.checkpoint import read_checkpoint_config

    base = Path(read_checkpoint_config(checkpoint.path).base_model)
    _check_diffusers_folder(base)
    return base, checkpoint.path


def _adapter_named(name: str) -> Any:
    from training.engine.adapters import get_adapter

    return get_adapter(name)


def materialize_base_model(checkpoint: Checkpoint) -> Path:
    """A diffusers folder holding `checkpoint`'s weights, for training or generating on top of it.

    Base models are their own folder. A trained checkpoint whose adapter folds into the
    denoiser's weights (`full` and every LoRA kind: lora, styledrop, kv_lora/finestyle) is
    merged once into var/models/merged/checkpoint-<id>/. StyleInject's update depends on the
    input, so no plain folder holds it: `seed_for_run` continues such a checkpoint with a run of
    the same adapter instead, and this refuses it with the reason.
    """
    if is_base_model(checkpoint):
        _check_diffusers_folder(Path(checkpoint.path))
        return Path(checkpoint.path)
    adapter = _adapter(checkpoint)
    if adapter.merge is None:
        raise BaseModelRefused(
            f"base_checkpoint {checkpoint.name}: its {checkpoint.adapter!r} adapter cannot be "
            "merged into a base model (its update depends on the input); seed a "
            f"{checkpoint.adapter!r} run from it, or start from its base model"
        )
    target = models_dir() / "merged" / f"checkpoint-{checkpoint.pk}"
    try:
        _check_diffusers_folder(target)
        return target
    except BaseModelRefused:
        pass
    from training.engine.generation import build_pipeline, denoiser_of

    pipeline = build_pipeline(checkpoint=checkpoint.path, device="cpu", use_ema=True)
    adapter.merge(denoiser_of(pipeline))
    target.parent.mkdir(parents=True, exist_ok=True)
    _save_pipeline_atomically(pipeline, target)
    return target
