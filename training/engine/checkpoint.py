"""Checkpoint folders: what a run needs to be used for inference and to resume exactly.

Layout of `<output_dir>/checkpoints/step-NNNNNNN/` (written to a `.tmp` sibling, then renamed,
so a folder that exists is complete):

    config.json               the TrainConfig, as JSON
    lineage.json              caller's lineage dict + datasets (manifest, sha256), base model,
                              adapter, recipe, step, library versions
    adapter/                  the adapter's own files (safetensors weights + its JSON)
    ema/ema.safetensors       EMA shadow of the trainable parameters (only with use_ema)
    ema/ema_state.json        EMA scalars (decay, optimization_step, ...)
    training_state/optimizer.pt   optimizer, lr scheduler and grad scaler state (torch.save)
    training_state/trainer.json   step, micro step, data position per role, loss history,
                                  python and numpy RNG states
    training_state/rng_<rank>.safetensors   torch CPU/CUDA RNG and the run's noise generator

`load_checkpoint_for_inference(path)` rebuilds the base model with the adapter (and EMA) applied.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.engine.config import TrainConfig

CHECKPOINTS_DIR = "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def python_numpy_rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    legacy = np.random.get_state()
    assert isinstance(legacy, tuple)  # the global RandomState is MT19937: the legacy tuple form
    kind, keys, position, has_gauss, cached = legacy
    return {
        "python": [version, list(state), gauss],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
    }


def restore_python_numpy_rng(state: dict[str, Any]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


def torch_rng_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state().cpu()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    return tensors


def restore_torch_rng(tensors: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    generator.set_state(tensors["generator"])
    if torch.cuda.is_available():
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def write_checkpoint_folder(
    output_dir: str | Path, step: int, fill: Any, keep: int | None = None
) -> Path:
    """Create the folder for `step` atomically: `fill(tmp_dir)` writes it, then it is renamed.

    With `keep`, only the newest `keep` checkpoints survive.
    """
    root = Path(output_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    temporary = root / f"{checkpoint_name(step)}.tmp"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    fill(temporary)
    if final.exists():
        shutil.rmtree(final)
    temporary.rename(final)
    if keep is not None:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    return final


def read_checkpoint_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint folder (no config.json)")
    return TrainConfig.from_json(config_file)


def read_lineage(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "lineage.json").read_text())


def load_checkpoint_for_inference(
    path: str | Path, *, base_model: str | Path | None = None, use_ema: bool = True
) -> dict[str, Any]:
    """Base components with the checkpoint's adapter loaded into the UNet (EMA weights when the
    run kept them and `use_ema`), plus `config` and `lineage`. `base_model` overrides the path
    stored in the config, for checkpoints moved to another machine."""
    from safetensors.torch import load_file

    from training.engine.adapters import get_adapter
    from training.engine.base_model import load_base_components

    path = Path(path)
    config = read_checkpoint_config(path)
    components = load_base_components(base_model or config.base_model)
    unet = components["unet"]
    get_adapter(config.adapter).load(unet, path / "adapter")
    ema_file = path / "ema" / "ema.safetensors"
    if use_ema and ema_file.is_file():
        parameters = dict(unet.named_parameters())
        with torch.no_grad():
            for name, tensor in load_file(ema_file).items():
                if name not in parameters:
                    raise ValueError(f"{ema_file}: EMA weight {name!r} has no UNet parameter")
                parameters[name].copy_(tensor)
    unet.requires_grad_(False).eval()
    components["config"] = config
    components["lineage"] = read_lineage(path)
    return components
