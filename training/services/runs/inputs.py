"""Training run inputs: the defaults a run starts from, which frozen version fills which
dataset role, and the checks a run passes before it is saved (`create_training_run`)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from curation.models import Dataset, DatasetVersion
from training.models import Checkpoint, TrainingRun
from training.services.checkpoints import is_tiny

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


def engine_config_dict(
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
    placeholder = engine_config_dict(
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
