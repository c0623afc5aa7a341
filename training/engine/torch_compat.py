"""Make torchvision importable beside the CPU build of torch this project pins.

The registry's torchvision wheels are linked against a CUDA torch; next to torch 2.13.0+cpu their
compiled operators do not load, and `import torchvision` (so `import open_clip`, and diffusers or
transformers when they probe for it) dies registering a fake kernel for `torchvision::nms`. Defining
the operator schemas first lets the Python side import. Nothing in this project calls torchvision's
compiled ops (nms, roi_align, ...), so they stay unusable; a GPU host whose torchvision matches its
torch loads the real library and this module does nothing there.

`install_torchvision_hook()` (what `import training.engine` and `import curation.retrieval` do)
applies the fix lazily: it costs nothing until something first looks torchvision up, so a Django
process that never touches torch (a manage.py command, a web worker) does not pay torch's
seconds of import at start-up, while diffusers, transformers and open_clip still find the
schemas defined before their first `import torchvision`.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import Any

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # kept alive: torch drops the definitions when the Library object is collected


def _compiled_ops_load(package_dir: Path) -> bool:
    """Load torchvision's own extension the way it would; False when it cannot (CUDA-linked)."""
    import torch

    for extension in package_dir.glob("_C*.so"):
        try:
            torch.ops.load_library(str(extension))
        except (OSError, RuntimeError):
            return False
        return True
    return False


def ensure_torchvision_importable() -> None:
    """Define torchvision's operator schemas when its compiled library cannot provide them."""
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return
    # A direct call must take the lazy hook out first: its own find_spec would otherwise fire the
    # hook, which defines the schemas, and this call would then define them a second time.
    uninstall_torchvision_hook()
    spec = importlib.util.find_spec("torchvision")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations or _compiled_ops_load(Path(locations[0])):
        return
    import torch

    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _library = library


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """A finder that never finds anything: on the first lookup of `torchvision` it removes
    itself, applies `ensure_torchvision_importable()` and lets the ordinary finders import it.
    Lookups by `importlib.util.find_spec` (transformers' availability probe) trigger it too."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "torchvision":
            uninstall_torchvision_hook()
            ensure_torchvision_importable()
        return None


_HOOK = _BeforeTorchvision()


def install_torchvision_hook() -> None:
    """Arrange for `ensure_torchvision_importable()` to run just before torchvision's first import,
    without importing torch now. Idempotent; nothing to do once torchvision is imported."""
    if _library is not None or "torchvision" in sys.modules or _HOOK in sys.meta_path:
        return
    sys.meta_path.insert(0, _HOOK)


def uninstall_torchvision_hook() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
