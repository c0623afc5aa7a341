"""Exports that load outside the engine: diffusers LoRA files, kohya/A1111/ComfyUI LoRA files, and
merged full checkpoints as diffusers folders.

- `diffusers`: `pytorch_lora_weights.safetensors` written by the family pipeline's own
  `save_lora_weights` (keys prefixed `unet.` or `transformer.`, the LoRA config stored as
  metadata so an alpha other than the rank reloads exactly); `pipeline.load_lora_weights(DIR)`
  reads it. A `full` checkpoint exports as a complete diffusers pipeline folder.
- `kohya`: one `.safetensors` of `lora_unet_…` keys (`lora_down`/`lora_up`/`alpha`) from
  diffusers' `convert_state_dict_to_kohya`, the layout A1111 and ComfyUI read (and diffusers'
  `load_lora_weights` converts). Only UNet families have that layout.

Weights are the ones `generate` samples with: the EMA when the run kept one.
`load_lora_checked(pipeline, path)` loads any LoRA file into a diffusers pipeline and raises
when no key reached the denoiser, instead of diffusers' warning and silent no-op.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

import training.engine  # noqa: F401  (torchvision shim before diffusers/peft)
from training.engine.errors import ConfigError

logger = logging.getLogger(__name__)

FORMATS = ("diffusers", "kohya")
DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
KOHYA_LORA_FILE = "lora_kohya.safetensors"
EXPORT_INFO = "export.json"
# Adapters that are peft LoRA inside (the name of their peft adapter does not matter here).
LORA_ADAPTERS = ("lora", "styledrop", "finestyle", "kv_lora")


class ExportError(ValueError):
    """A checkpoint cannot be exported in the asked format; the message says why."""


class LoraLoadError(ValueError):
    """A LoRA file loaded no weights into the pipeline's denoiser."""


def _peft_state(denoiser: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """(peft state dict without adapter names, its LoraConfig) of the denoiser's one adapter."""
    from peft.utils import get_peft_model_state_dict

    configs = getattr(denoiser, "peft_config", None) or {}
    if len(configs) != 1:
        raise ExportError(
            f"the denoiser carries {len(configs)} LoRA adapters ({sorted(configs)}); export "
            "needs exactly one"
        )
    name, config = next(iter(configs.items()))
    state = get_peft_model_state_dict(denoiser, adapter_name=name)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}, config


def _write_info(out: Path, info: dict[str, Any]) -> None:
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2, sort_keys=True, default=str))


def check_exportable(
    checkpoint: str | Path, fmt: str, *, base_model: str | Path | None = None
) -> dict[str, Any]:
    """What exporting `checkpoint` as `fmt` would write, checked without loading any weights:
    {"family", "adapter", "base_model", "writes": "lora_file" | "pipeline_folder"}.

    Raises ConfigError (unknown format), ExportError (not a checkpoint folder, or an adapter or
    family the format cannot hold) or BaseModelError (the base folder is gone, broken or of
    another family), each naming the file or field at fault.
    """
    from training.engine.checkpoint import checkpoint_family, read_checkpoint_config
    from training.engine.errors import BaseModelError
    from training.engine.families import get_family, inspect_model_folder

    if fmt not in FORMATS:
        raise ConfigError("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    path = Path(checkpoint)
    if not path.is_dir():
        raise ExportError(f"checkpoint {path}: no such folder (moved or deleted)")
    try:
        config = read_checkpoint_config(path)
    except FileNotFoundError as error:
        raise ExportError(str(error)) from error
    base = Path(base_model or config.base_model)
    family = checkpoint_family(path)
    found = inspect_model_folder(base).family
    if found != family:
        raise BaseModelError(
            f"base_model: {base} is a {found} model, but checkpoint {path} was trained on a "
            f"{family} model"
        )
    plan = {"family": family, "adapter": config.adapter, "base_model": str(base)}
    if config.adapter == "full":
        if fmt != "diffusers":
            raise ExportError(
                f"format {fmt!r}: a full checkpoint exports as a diffusers folder (format "
                "'diffusers'); kohya files hold LoRA weights only"
            )
        return {**plan, "writes": "pipeline_folder"}
    if config.adapter not in LORA_ADAPTERS:
        raise ExportError(
            f"adapter {config.adapter!r}: only LoRA-type adapters ({', '.join(LORA_ADAPTERS)}) "
            "and full checkpoints have a format other tools load"
        )
    if fmt == "kohya" and get_family(family).lora_prefix != "unet":
        raise ExportError(_NO_KOHYA_LAYOUT.format(family=family))
    return {**plan, "writes": "lora_file"}


_NO_KOHYA_LAYOUT = (
    "format 'kohya': the {family} family's transformer has no A1111/kohya key layout; export "
    "with format 'diffusers' (ComfyUI and diffusers read it)"
)


_LORA_DOWN = ("lora_A.weight", "lora.down.weight", "lora_down.weight")


def _tensor_names(files: list[Path]) -> list[str]:
    from safetensors import safe_open

    names: list[str] = []
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            names.extend(handle.keys())
    return names


def _written(files: list[Path]) -> dict[str, Any]:
    """What an export put on disk, read back from its files: the proof it is not empty."""
    names = _tensor_names(files)
    return {
        "tensors_written": len(names),
        # peft, diffusers and kohya name the down projection three ways.
        "lora_modules": sum(n.endswith(_LORA_DOWN) for n in names),
        "bytes_written": sum(f.stat().st_size for f in files),
    }


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path,
    *,
    base_model: str | Path | None = None,
    use_ema: bool = True,
) -> Path:
    """Write `checkpoint` in `fmt` ("diffusers" or "kohya") under `out` (created, or emptied
    of an earlier export); returns the file or folder a user hands on. `out/export.json` says
    what was exported and how many tensors were written."""
    from training.engine.checkpoint import load_checkpoint_for_inference

    plan = check_exportable(checkpoint, fmt, base_model=base_model)
    components = load_checkpoint_for_inference(checkpoint, base_model=base_model, use_ema=use_ema)
    family, config = components["family"], components["config"]
    denoiser = components[family.denoiser]
    out = Path(out)
    info = {
        "checkpoint": str(checkpoint),
        "format": fmt,
        "family": family.name,
        "adapter": config.adapter,
        "base_model": str(base_model or config.base_model),
        "ema": use_ema and (Path(checkpoint) / "ema" / "ema.safetensors").is_file(),
    }
    if plan["writes"] == "pipeline_folder":
        if out.exists():
            shutil.rmtree(out)
        pipeline = family.pipeline(components)
        pipeline.save_pretrained(out, safe_serialization=True)
        _write_info(out, {**info, **_written(sorted(out.rglob("*.safetensors")))})
        return out
    state, lora_config = _peft_state(denoiser)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (DIFFUSERS_LORA_FILE, KOHYA_LORA_FILE, EXPORT_INFO):
        (out / stale).unlink(missing_ok=True)
    info.update(rank=lora_config.r, alpha=lora_config.lora_alpha, tensors=len(state))
    if fmt == "diffusers":
        path = _save_diffusers_lora(family, state, lora_config, out)
    else:
        path = _save_kohya_lora(family, state, lora_config, out)
    _write_info(out, {**info, "file": path.name, **_written([path])})
    return path


def _save_diffusers_lora(family: Any, state: dict, lora_config: Any, out: Path) -> Path:
    from diffusers.utils import convert_state_dict_to_diffusers

    layers = convert_state_dict_to_diffusers(state) if family.lora_prefix == "unet" else state
    metadata = lora_config.to_dict()
    family.pipeline_type().save_lora_weights(
        out,
        safe_serialization=True,
        **{
            f"{family.lora_prefix}_lora_layers": layers,
            f"{family.lora_prefix}_lora_adapter_metadata": metadata,
        },
    )
    return out / DIFFUSERS_LORA_FILE


def _save_kohya_lora(family: Any, state: dict, lora_config: Any, out: Path) -> Path:
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    if family.lora_prefix != "unet":
        raise ExportError(_NO_KOHYA_LAYOUT.format(family=family.name))
    if getattr(lora_config, "rank_pattern", None) or getattr(lora_config, "alpha_pattern", None):
        raise ExportError("format 'kohya': per-module ranks or alphas have no kohya encoding")
    prefixed = {f"unet.{k}": v for k, v in state.items()}
    kohya = convert_state_dict_to_kohya(prefixed)
    alpha = float(lora_config.lora_alpha)
    # convert_state_dict_to_kohya writes alpha = rank (scale 1); the run's own alpha keeps the
    # output equal to the engine's when alpha differs from the rank.
    kohya = {
        k: (torch.tensor(alpha) if k.endswith(".alpha") else v.contiguous())
        for k, v in kohya.items()
    }
    if not any(k.startswith("lora_unet_") for k in kohya):
        raise ExportError("format 'kohya': conversion produced no lora_unet_ keys")
    path = out / KOHYA_LORA_FILE
    save_file(
        kohya,
        path,
        metadata={
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(lora_config.r),
            "ss_network_alpha": str(alpha),
            "ss_base_model_version": {"sd": "sd_v1", "sdxl": "sdxl_base_v1-0"}.get(
                family.name, family.name
            ),
        },
    )
    return path


def lora_layer_count(denoiser: Any, adapter_name: str) -> int:
    """How many modules of `denoiser` carry LoRA weights for `adapter_name`."""
    count = 0
    for module in denoiser.modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and adapter_name in lora_a:
            count += 1
    return count


def load_lora_checked(pipeline: Any, path: str | Path, adapter_name: str = "exported") -> int:
    """`pipeline.load_lora_weights(path)`, then the number of denoiser modules it reached;
    raises LoraLoadError when that is zero (diffusers only warns "No LoRA keys ...")."""
    denoiser = getattr(pipeline, "transformer", None) or pipeline.unet
    path = Path(path)
    where = (str(path.parent), {"weight_name": path.name}) if path.is_file() else (str(path), {})
    try:
        pipeline.load_lora_weights(where[0], adapter_name=adapter_name, **where[1])
    except (ValueError, KeyError, OSError) as error:
        raise LoraLoadError(f"{path}: diffusers could not load it as a LoRA: {error}") from error
    layers = lora_layer_count(denoiser, adapter_name)
    if layers == 0:
        raise LoraLoadError(
            f"{path}: no LoRA keys reached the pipeline's {type(denoiser).__name__}; the file "
            "is not a LoRA for this model layout (diffusers loaded nothing)"
        )
    return layers
