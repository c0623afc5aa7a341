"""Load the frozen parts of a Stable-Diffusion-layout base model from a local diffusers folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import training.engine  # noqa: F401  (torchvision shim before diffusers/transformers)

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class BaseModelError(ValueError):
    """The base model folder is missing or not in diffusers' Stable Diffusion layout."""


def check_base_model(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise BaseModelError(f"base_model: {path} is not a directory")
    missing = [name for name in SUBFOLDERS if not (path / name).is_dir()]
    if missing:
        raise BaseModelError(
            f"base_model: {path} is not a diffusers Stable Diffusion folder (missing {missing}); "
            "write one with `python -m training.engine tiny-base DIR` or `save_pretrained`"
        )
    return path


def load_base_components(path: str | Path) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer, `scheduler` (the folder's own, for sampling) and
    `noise_scheduler` (DDPM with the same noise schedule, for training), all on the CPU."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    path = check_base_model(path)
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    local: dict[str, Any] = {"local_files_only": True}
    import diffusers

    scheduler_config = DDPMScheduler.load_config(path, subfolder="scheduler", **local)
    scheduler_class = getattr(diffusers, scheduler_config.get("_class_name", "DDPMScheduler"))
    return {
        "unet": UNet2DConditionModel.from_pretrained(path, subfolder="unet", **local),
        "vae": AutoencoderKL.from_pretrained(path, subfolder="vae", **local),
        "text_encoder": CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **local),
        "tokenizer": CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **local),
        "scheduler": scheduler_class.from_config(scheduler_config),
        "noise_scheduler": DDPMScheduler.from_config(scheduler_config),
    }
