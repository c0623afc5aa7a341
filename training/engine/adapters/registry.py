"""The adapter registry: `Adapter`, `register_adapter`, `get_adapter` (see the package doc)."""

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
PACKAGE = "training.engine.adapters"

ApplyFn = Callable[[Any, dict[str, Any]], list[torch.nn.Parameter]]
SaveFn = Callable[[Any, Path], object]  # the result is ignored; some return the folder
LoadFn = Callable[[Any, Path], None]
MergeFn = Callable[[Any], None]


@dataclass(frozen=True)
class Adapter:
    name: str
    apply: ApplyFn
    save: SaveFn
    load: LoadFn
    description: str = ""
    merge: MergeFn | None = None


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
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        try:
            importlib.import_module(f"{PACKAGE}.{module.name}")
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
