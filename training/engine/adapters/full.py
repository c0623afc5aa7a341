"""`full`: every denoiser weight trains; saved as a complete diffusers model folder (drop-in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.engine.adapters.registry import Adapter, register_adapter

WEIGHTS = "diffusion_pytorch_model.safetensors"


def apply(unet: Any, params: dict[str, Any]) -> list[torch.nn.Parameter]:
    if params:
        raise ValueError(f"adapter_params: the full adapter takes none, got {sorted(params)}")
    unet.requires_grad_(True)
    return list(unet.parameters())


def save(unet: Any, directory: Path) -> None:
    unet.save_pretrained(directory, safe_serialization=True)


def load(unet: Any, directory: Path) -> None:
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: full-UNet weights missing from the checkpoint")
    unet.load_state_dict(load_file(path), strict=True)


def merge(unet: Any) -> None:
    """Nothing to fold: the trained weights are the denoiser's own."""


register_adapter(Adapter("full", apply, save, load, "fine-tune every UNet weight", merge=merge))
