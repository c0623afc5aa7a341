"""Adapters: what part of the UNet a run trains and how those weights are saved and loaded.

Interface (one `Adapter` per name, registered with `register_adapter`):

- `apply(unet, params) -> list[Parameter]`: freeze what must not train, add any new modules
  (LoRA layers, style tokens...), and return exactly the parameters the optimizer should update.
  `params` is `TrainConfig.adapter_params` (a JSON object); unknown keys should raise ValueError.
- `save(unet, directory)`: write the trained weights (safetensors) and whatever JSON the adapter
  needs to rebuild itself into `directory`, which exists and is empty.
- `load(unet, directory)`: on a freshly loaded base UNet (or one `apply` already prepared, when a
  run resumes), restore what `save` wrote so outputs match bit-for-bit.

An adapter module registers itself at import time:

    from training.engine.adapters import Adapter, register_adapter
    register_adapter(Adapter("kv_lora", apply=apply, save=save, load=load))

Modules in this package are imported on first lookup of an unknown name, so a new module needs
no edit here. `full` and `lora` live in `full.py` and `lora.py`.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

ApplyFn = Callable[[Any, dict[str, Any]], list[torch.nn.Parameter]]
SaveFn = Callable[[Any, Path], object]  # the result is ignored; some return the folder
LoadFn = Callable[[Any, Path], None]


@dataclass(frozen=True)
class Adapter:
    name: str
    apply: ApplyFn
    save: SaveFn
    load: LoadFn
    description: str = ""


ADAPTERS: dict[str, Adapter] = {}
_discovered = False


def register_adapter(adapter: Adapter) -> Adapter:
    ADAPTERS[adapter.name] = adapter
    return adapter


def _discover() -> None:
    """Import every module of this package once so self-registering adapters appear."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__):
        try:
            importlib.import_module(f"{__name__}.{module.name}")
        except Exception:  # one broken adapter module must not hide the others
            logger.exception("adapter module %s failed to import", module.name)


def get_adapter(name: str) -> Adapter:
    if name not in ADAPTERS:
        _discover()
    if name not in ADAPTERS:
        raise KeyError(f"adapter {name!r} is not registered (known: {sorted(ADAPTERS)})")
    return ADAPTERS[name]


def available_adapters() -> list[str]:
    _discover()
    return sorted(ADAPTERS)


# The two built in adapters; imported last because they register through the names above.
from training.engine.adapters import full, lora  # noqa: E402, F401
