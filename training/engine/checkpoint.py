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
                                  world size
    training_state/rng_<rank>.safetensors   per process: torch CPU RNG, its CUDA device's RNG
                                  and the run's noise generator
    training_state/rng_<rank>.json          per process: python and numpy RNG states

Every process of a multi-GPU run writes its own `rng_<rank>` files into the folder before the
main process completes it, so each rank resumes its own random streams exactly.

`save_training_checkpoint(trainer)` / `restore_training_checkpoint(trainer, path)` write and
read that folder for the loop's Trainer; `initialize_from_checkpoint(trainer, path)` starts a
run from another checkpoint's adapter weights; `load_checkpoint_for_inference(path)` rebuilds
the base model with the adapter (and EMA) applied, refusing a base model of another family.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.engine.config import ConfigError, TrainConfig
from training.engine.errors import BaseModelError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_NAME = re.compile(r"step-\d+")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete checkpoint folders, oldest first: a `step-N.tmp` folder is one a killed
    process was still writing, never one to resume from."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name))


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


def torch_rng_tensors(
    generator: torch.Generator, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """This process's torch RNG: CPU, its own CUDA device (a rank draws on one GPU) and the
    run's noise generator."""
    tensors = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state().cpu()}
    if device is not None and device.type == "cuda":
        tensors["torch_cuda"] = torch.cuda.get_rng_state(device)
    return tensors


def restore_torch_rng(
    tensors: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device | None = None
) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    generator.set_state(tensors["generator"])
    if device is not None and device.type == "cuda" and "torch_cuda" in tensors:
        torch.cuda.set_rng_state(tensors["torch_cuda"], device)


def rank_rng_files(folder: Path, rank: int) -> tuple[Path, Path]:
    state = folder / "training_state"
    return state / f"rng_{rank}.safetensors", state / f"rng_{rank}.json"


def write_rank_rng(folder: Path, rank: int, generator: torch.Generator, device: Any) -> None:
    from safetensors.torch import save_file

    tensors_file, json_file = rank_rng_files(folder, rank)
    tensors_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(torch_rng_tensors(generator, device), tensors_file)
    json_file.write_text(json.dumps(python_numpy_rng_state()))


def temporary_checkpoint_folder(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"{checkpoint_name(step)}.tmp"


def fresh_temporary_folder(output_dir: str | Path, step: int) -> Path:
    temporary = temporary_checkpoint_folder(output_dir, step)
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    return temporary


def write_checkpoint_folder(
    output_dir: str | Path, step: int, fill: Any, keep: int | None = None, *, fresh: bool = True
) -> Path:
    """Create the folder for `step` atomically: `fill(tmp_dir)` writes it, then it is renamed.

    With `keep`, only the newest `keep` checkpoints survive. `fresh=False` keeps what other
    processes already wrote into the temporary folder.
    """
    root = Path(output_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    temporary = temporary_checkpoint_folder(output_dir, step)
    if fresh or not temporary.is_dir():
        temporary = fresh_temporary_folder(output_dir, step)
    fill(temporary)
    if final.exists():
        shutil.rmtree(final)
    temporary.rename(final)
    for stale in root.glob("step-*.tmp"):  # left by a process killed while writing
        shutil.rmtree(stale)
    if keep is not None:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    return final


def is_checkpoint(path: str | Path) -> bool:
    """A finished checkpoint folder: write_checkpoint_folder renames it into place complete."""
    return (Path(path) / "config.json").is_file()


def read_checkpoint_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not is_checkpoint(path):
        raise FileNotFoundError(f"{path}: not a checkpoint folder (no config.json)")
    return TrainConfig.from_json(path / "config.json")


def read_lineage(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "lineage.json").read_text())


def save_training_checkpoint(trainer: Any) -> Path | None:
    """Write the Trainer's state as the next checkpoint folder: every process its own RNG
    files, then the main process the rest; returns the folder on the main process."""
    from safetensors.torch import save_file

    accelerator = trainer.accelerator
    output_dir, step = trainer.config.output_dir, trainer.step
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        fresh_temporary_folder(output_dir, step)
    accelerator.wait_for_everyone()
    temporary = temporary_checkpoint_folder(output_dir, step)
    write_rank_rng(temporary, accelerator.process_index, trainer.generator, trainer.device)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None

    def fill(folder: Path) -> None:
        trainer.config.to_json(folder / "config.json")
        (folder / "lineage.json").write_text(
            json.dumps(trainer.lineage_record(), indent=2, default=str)
        )
        (folder / "adapter").mkdir()
        trainer.adapter.save(trainer.unwrapped_denoiser(), folder / "adapter")
        if trainer.ema is not None:
            (folder / "ema").mkdir()
            names = list(trainer.named_trainable())
            shadow = {
                n: t.detach().cpu().contiguous()
                for n, t in zip(names, trainer.ema.shadow_params, strict=True)
            }
            save_file(shadow, folder / "ema" / "ema.safetensors")
            scalars = {k: v for k, v in trainer.ema.state_dict().items() if k != "shadow_params"}
            (folder / "ema" / "ema_state.json").write_text(json.dumps(scalars, indent=2))
        state = folder / "training_state"
        state.mkdir(exist_ok=True)
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        torch.save(
            {
                "optimizer": trainer.optimizer.state_dict(),
                "lr_scheduler": trainer.lr_scheduler.state_dict(),
                "grad_scaler": scaler,
            },
            state / "optimizer.pt",
        )
        trainer_state = {
            "step": trainer.step,
            "micro_step": trainer.micro_step,
            "data_position": {role: order.state_dict() for role, order in trainer.orders.items()},
            "losses": trainer.losses,
            "role_losses": trainer.role_losses,
            "skipped_images": trainer.skipped,
            "world_size": accelerator.num_processes,
        }
        (state / "trainer.json").write_text(json.dumps(trainer_state))

    return write_checkpoint_folder(
        output_dir, step, fill, trainer.config.keep_checkpoints, fresh=False
    )


def restore_training_checkpoint(trainer: Any, path: str | Path, may_change: frozenset[str]) -> None:
    """Load a checkpoint's weights, optimizer, schedule, EMA, data position and RNG into
    `trainer`; every config field but `may_change` must equal the checkpoint's."""
    from safetensors.torch import load_file

    path = Path(path)
    saved = read_checkpoint_config(path).to_dict()
    current = trainer.config.to_dict()
    for name in sorted(current):
        if name not in may_change and saved.get(name) != current[name]:
            raise ConfigError(
                name,
                f"differs from the checkpoint being resumed ({path}): "
                f"{saved.get(name)!r} there, {current[name]!r} here",
            )
    trainer.adapter.load(trainer.unwrapped_denoiser(), path / "adapter")
    state = torch.load(
        path / "training_state" / "optimizer.pt", map_location="cpu", weights_only=True
    )
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
    scaler = trainer.accelerator.scaler
    if state["grad_scaler"] is not None and scaler is not None:
        scaler.load_state_dict(state["grad_scaler"])
    if trainer.ema is not None:
        ema_file = path / "ema" / "ema.safetensors"
        if not ema_file.is_file():
            raise FileNotFoundError(f"{ema_file}: use_ema is on but the checkpoint has no EMA")
        shadow = load_file(ema_file, device=str(trainer.device))
        scalars = json.loads((path / "ema" / "ema_state.json").read_text())
        names = list(trainer.named_trainable())
        trainer.ema.load_state_dict({**scalars, "shadow_params": [shadow[n] for n in names]})
    trainer_state = json.loads((path / "training_state" / "trainer.json").read_text())
    trainer.step = trainer_state["step"]
    trainer.micro_step = trainer_state["micro_step"]
    for role, position in trainer_state["data_position"].items():
        trainer.orders[role].load_state_dict(position)
    trainer.losses = list(trainer_state["losses"])
    trainer.role_losses = list(trainer_state["role_losses"])
    trainer.batches.set_skipped(list(trainer_state["skipped_images"]))
    restore_rank_rng(trainer, path, trainer_state)


def restore_rank_rng(trainer: Any, path: Path, trainer_state: dict[str, Any]) -> None:
    """This process's random streams as its rank saved them. A checkpoint of another world size
    has no file for some ranks: those start a fresh stream per (seed, rank, step), and the log
    says the resume is not exact."""
    from safetensors.torch import load_file

    accelerator = trainer.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    saved_world = int(trainer_state.get("world_size", 1))
    if saved_world != world:
        logger.warning(
            "%s was written by %d process(es), this run has %d: data order and noise are not "
            "those of an uninterrupted run",
            path,
            saved_world,
            world,
        )
    tensors_file, json_file = rank_rng_files(path, rank)
    if json_file.is_file():
        restore_python_numpy_rng(json.loads(json_file.read_text()))
    elif "rng" in trainer_state:  # checkpoints from before per-rank files: rank 0's state
        restore_python_numpy_rng(trainer_state["rng"])
    if tensors_file.is_file():
        restore_torch_rng(load_file(tensors_file), trainer.generator, trainer.device)
    else:
        trainer.generator.manual_seed(trainer.config.seed * 7919 + rank + 104729 * trainer.step)


def initialize_from_checkpoint(trainer: Any, checkpoint: str | Path) -> None:
    """Start `trainer` from another checkpoint's adapter weights (not its optimizer, step or
    data position): the checkpoint must hold the same adapter (FineStyle's two names are one)
    trained on the same base model. The weights load in place into the parameters the
    optimizer holds; an EMA is rebuilt around them so it does not pull back towards the fresh
    init."""
    from training.engine.adapters import get_adapter

    path = Path(checkpoint)
    try:
        source = read_checkpoint_config(path)
    except FileNotFoundError as error:
        raise ConfigError("init_from", str(error)) from error
    config = trainer.config
    if get_adapter(source.adapter).load is not trainer.adapter.load:
        raise ConfigError(
            "init_from",
            f"{path} holds a {source.adapter!r} adapter, this run trains {config.adapter!r}; "
            "start from a checkpoint of the same adapter (or merge it into a base model first)",
        )
    if Path(source.base_model).resolve() != Path(config.base_model).resolve():
        raise ConfigError(
            "init_from",
            f"{path} was trained on {source.base_model}, this run's base_model is "
            f"{config.base_model}; its adapter only fits the model it was trained on",
        )
    trainer.adapter.load(trainer.unwrapped_denoiser(), path / "adapter")
    if trainer.ema is not None:
        from diffusers.training_utils import EMAModel

        trainer.ema = EMAModel(trainer.trainable, decay=config.ema_decay)
        trainer.ema.to(trainer.device)


def checkpoint_family(path: str | Path) -> str:
    """The family a checkpoint was trained on (lineage; checkpoints from before families
    existed are SD 1.x)."""
    family = read_lineage(path).get("family")
    return family.get("name", "sd") if isinstance(family, dict) else "sd"


def load_checkpoint_for_inference(
    path: str | Path, *, base_model: str | Path | None = None, use_ema: bool = True
) -> dict[str, Any]:
    """Base components with the checkpoint's adapter loaded into the denoiser (EMA weights when
    the run kept them and `use_ema`), plus `config` and `lineage`. `base_model` overrides the
    path stored in the config, for checkpoints moved to another machine; one of another family
    than the checkpoint's is refused."""
    from safetensors.torch import load_file

    from training.engine.adapters import get_adapter
    from training.engine.base_model import load_base_components
    from training.engine.families import inspect_model_folder

    path = Path(path)
    config = read_checkpoint_config(path)
    base = base_model or config.base_model
    trained_on, found = checkpoint_family(path), inspect_model_folder(base).family
    if trained_on != found:
        raise BaseModelError(
            f"base_model: {base} is a {found} model, but checkpoint {path} was trained on a "
            f"{trained_on} model"
        )
    components = load_base_components(base)
    denoiser = components[components["family"].denoiser]
    get_adapter(config.adapter).load(denoiser, path / "adapter")
    ema_file = path / "ema" / "ema.safetensors"
    if use_ema and ema_file.is_file():
        parameters = dict(denoiser.named_parameters())
        with torch.no_grad():
            for name, tensor in load_file(ema_file).items():
                if name not in parameters:
                    raise ValueError(f"{ema_file}: EMA weight {name!r} has no denoiser parameter")
                parameters[name].copy_(tensor)
    denoiser.requires_grad_(False).eval()
    components["config"] = config
    components["lineage"] = read_lineage(path)
    return components
