"""Adapters: what part of the UNet a run trains and how those weights are saved and loaded.

Interface (one `Adapter` per name, registered with `register_adapter`):

- `apply(unet, params) -> list[Parameter]`: freeze what must not train, add any new modules
  (LoRA layers, style tokens...), and return exactly the parameters the optimizer should update.
  `params` is `TrainConfig.adapter_params` (a JSON object); unknown keys should raise ValueError.
- `save(unet, directory)`: write the trained weights (safetensors) and whatever JSON the adapter
  needs to rebuild itself into `directory`, which exists and is empty.
- `load(unet, directory)`: on a freshly loaded base UNet (or one `apply` already prepared, when a
  run resumes), restore what `save` wrote so outputs match bit-for-bit.
- `merge(unet)` (optional): fold the loaded adapter into the denoiser's own weights so it saves
  as a plain diffusers model, which is how a trained checkpoint becomes the base of the next
  round. None for adapters whose update is not a weight change (StyleInject's variance
  injection depends on the input); those seed a round by continuing the same adapter instead
  (`TrainConfig.init_from`).

An adapter module registers itself at import time:

    from training.engine.adapters.registry import Adapter, register_adapter
    register_adapter(Adapter("kv_lora", apply=apply, save=save, load=load))

Modules in this package are imported on first lookup of an unknown name, so a new module needs
no edit here. `full` and `lora` live in `full.py` and `lora.py`; every LoRA kind (`lora`,
StyleDrop, FineStyle) is built by `peft_lora.lora_adapter`.
"""

from __future__ import annotations

from training.engine.adapters import full, lora
from training.engine.adapters.registry import (
    ADAPTERS,
    Adapter,
    ApplyFn,
    LoadFn,
    MergeFn,
    SaveFn,
    available_adapters,
    get_adapter,
    register_adapter,
)

__all__ = [
    "ADAPTERS",
    "Adapter",
    "ApplyFn",
    "LoadFn",
    "MergeFn",
    "SaveFn",
    "available_adapters",
    "full",
    "get_adapter",
    "lora",
    "register_adapter",
]
