"""A saved run as the engine sees it: its output folder, its `TrainConfig` (roles, verified local
manifests, the seed checkpoint) and what the platform adds to the engine's lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from curation.models import DatasetVersion, Job
from training.models import TrainingRun
from training.services.checkpoints import BaseModelRefused, seed_for_run
from training.services.manifests import ManifestRefused, cache_dir, local_manifest
from training.services.runs.inputs import (
    TrainingRunError,
    assign_roles,
    engine_config_dict,
    merged_hyperparameters,
)


def runs_dir() -> Path:
    return Path(getattr(settings, "TRAINING_RUNS_DIR", settings.VAR_DIR / "runs"))


def run_output_dir(run: TrainingRun) -> Path:
    """The run's own folder; its creation time is in the name so a database that was reset (ids
    reused) never resumes another run's checkpoints."""
    if run.output_dir:
        return Path(run.output_dir)
    return runs_dir() / f"{run.pk}-{run.created_at:%Y%m%dT%H%M%S%f}"


def run_versions(run: TrainingRun) -> list[DatasetVersion]:
    return list(run.dataset_versions.select_related("dataset").order_by("pk"))


def build_train_config(run: TrainingRun) -> Any:
    """The engine TrainConfig for `run`: roles from dataset kinds, manifests as verified local
    files, output under var/runs/<id>/, hyperparameters merged over the defaults."""
    from training.engine.config import ConfigError, DatasetSpec, TrainConfig

    versions = run_versions(run)
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
    data = engine_config_dict(
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
                for v in run_versions(run)
            ],
        }
    }
