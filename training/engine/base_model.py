"""Load a base model from a local diffusers folder, whatever its family (see `families/`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import training.engine  # noqa: F401  (torchvision shim before diffusers/transformers)
from training.engine.errors import BaseModelError
from training.engine.families import ModelFolder, get_family, inspect_model_folder

__all__ = ["BaseModelError", "ModelFolder", "check_base_model", "load_base_components"]


def check_base_model(path: str | Path) -> Path:
    """The folder, once `inspect_model_folder` found it complete; BaseModelError naming the part
    that is missing or unknown otherwise."""
    return inspect_model_folder(path).path


def load_base_components(path: str | Path) -> dict[str, Any]:
    """The family's components on the CPU (named as its pipeline names them: unet or
    transformer, vae, text_encoder(s), tokenizer(s)), `scheduler` (the folder's own, for
    sampling), `noise_scheduler` (for training) and `family` (the ModelFamily)."""
    folder = inspect_model_folder(path)
    family = get_family(folder.family)
    try:
        components = family.load(folder.path, variant=folder.variant)
    except BaseModelError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise BaseModelError(
            f"base_model: {folder.path}: the {family.name} pipeline could not load it: {error}"
        ) from error
    family.check_components(components)
    components["family"] = family
    components["model_folder"] = folder
    return components
