"""`lora`: peft LoRA layers on the UNet's attention projections; the base stays frozen.

Params: `rank` (4), `alpha` (= rank), `target_modules` (the four attention projections, as in
diffusers' LoRA examples), `dropout` (0), `init` ("gaussian"). Saved as peft's own state dict plus
the params, which reload bit-exactly into a fresh base UNet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from training.engine.adapters import Adapter, register_adapter

WEIGHTS = "adapter_model.safetensors"
PARAMS = "adapter_params.json"
DEFAULTS: dict[str, Any] = {
    "rank": 4,
    "alpha": None,
    "target_modules": ["to_k", "to_q", "to_v", "to_out.0"],
    "dropout": 0.0,
    "init": "gaussian",
}


def _resolved(params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"adapter_params.{unknown[0]}: unknown LoRA parameter (known: {sorted(DEFAULTS)})"
        )
    merged = {**DEFAULTS, **params}
    if not isinstance(merged["rank"], int) or merged["rank"] <= 0:
        raise ValueError(f"adapter_params.rank: must be a positive integer, got {merged['rank']!r}")
    if merged["alpha"] is None:
        merged["alpha"] = merged["rank"]
    if not merged["target_modules"]:
        raise ValueError("adapter_params.target_modules: must name at least one module")
    return merged


def apply(unet: Any, params: dict[str, Any]) -> list[torch.nn.Parameter]:
    from peft import LoraConfig

    merged = _resolved(params)
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=merged["rank"],
            lora_alpha=merged["alpha"],
            lora_dropout=merged["dropout"],
            init_lora_weights=merged["init"],
            target_modules=list(merged["target_modules"]),
        )
    )
    trainable = [p for p in unet.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            f"adapter_params.target_modules: {merged['target_modules']} matched no UNet module"
        )
    return trainable


def save(unet: Any, directory: Path) -> None:
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    save_file(state, directory / WEIGHTS)
    params = _resolved(getattr(unet, "_engine_lora_params", {}))
    (directory / PARAMS).write_text(json.dumps(params, indent=2, sort_keys=True))


def load(unet: Any, directory: Path) -> None:
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (WEIGHTS, PARAMS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: LoRA checkpoint file missing")
    params = json.loads((directory / PARAMS).read_text())
    if not getattr(unet, "peft_config", None):
        _apply_remembering(unet, params)
    result = set_peft_model_state_dict(unet, load_file(directory / WEIGHTS))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"{directory / WEIGHTS}: keys the UNet has no place for: {unexpected[:5]}")


def _apply_remembering(unet: Any, params: dict[str, Any]) -> list[torch.nn.Parameter]:
    """`apply`, keeping the params on the module so `save` can write them next to the weights."""
    trainable = apply(unet, params)
    unet._engine_lora_params = {k: v for k, v in _resolved(params).items()}
    return trainable


register_adapter(
    Adapter("lora", _apply_remembering, save, load, "peft LoRA on the attention projections")
)
