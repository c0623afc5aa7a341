"""The one LoRA plumbing behind `lora`, StyleDrop (`styledrop`) and FineStyle (`finestyle`/`kv_lora`).

They differ only in their defaults (which modules, which extra knobs the recipe or sampler
reads) and in the name of the peft adapter inside the denoiser; injecting, saving, loading and
merging are the same peft calls, written once here. `lora_adapter(...)` builds the registered
`Adapter` of one kind.

Saved form (every kind): `adapter_model.safetensors` (peft's state dict of that adapter only)
and `adapter_config.json` (`{"adapter": <peft name>, "params": {...}}`). Checkpoints of `lora`
written before the kinds were unified (`adapter_params.json` beside the weights) still load.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch

import training.engine  # noqa: F401  (torchvision shim before diffusers/peft)
from training.engine.adapters.registry import Adapter
from training.engine.errors import ConfigError

if TYPE_CHECKING:
    from diffusers.loaders.peft import PeftAdapterMixin

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
LEGACY_PARAMS_FILE = "adapter_params.json"  # `lora` checkpoints from before the unification
PARAMS_ATTRIBUTE = "_engine_lora_params"  # {peft name: params}, read back by save()

CheckFn = Callable[[dict[str, Any]], None]


class _KeyReport(Protocol):
    """torch's _IncompatibleKeys, which set_peft_model_state_dict returns; peft annotates it as
    a bare `namedtuple`."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def resolve_params(params: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with `params`, checked; alpha None becomes rank (scale 1 at any rank)."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ConfigError(
            f"adapter_params.{unknown[0]}", f"unknown parameter (known: {', '.join(defaults)})"
        )
    merged = {**defaults, **params}
    rank = merged["rank"]
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ConfigError("adapter_params.rank", f"must be a positive integer, got {rank!r}")
    alpha = merged.get("alpha")
    if alpha is None:
        merged["alpha"] = rank
    elif isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
        raise ConfigError("adapter_params.alpha", f"must be a positive number, got {alpha!r}")
    dropout = merged.get("dropout", 0.0)
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError("adapter_params.dropout", f"must be in [0, 1), got {dropout!r}")
    if not merged.get("target_modules"):
        raise ConfigError("adapter_params.target_modules", "must name at least one module")
    return merged


def add_lora(denoiser: torch.nn.Module, peft_name: str, params: Mapping[str, Any]) -> list[Any]:
    """Freeze `denoiser`, inject a named peft LoRA adapter and return its trainable parameters."""
    from peft import LoraConfig

    targets = params["target_modules"]
    config = LoraConfig(
        r=params["rank"],
        lora_alpha=params["alpha"],
        lora_dropout=float(params.get("dropout", 0.0)),
        target_modules=targets if isinstance(targets, str) else list(targets),
        init_lora_weights=params.get("init", "gaussian"),
    )
    denoiser.requires_grad_(False)
    try:
        # A diffusers model: its PeftAdapterMixin supplies add_adapter/set_adapter.
        cast("PeftAdapterMixin", denoiser).add_adapter(config, adapter_name=peft_name)
    except ValueError as error:
        if "matching" in str(error) or "not found" in str(error):
            raise ConfigError(
                "adapter_params.target_modules",
                f"{targets!r} matches no module of this {type(denoiser).__name__} ({error})",
            ) from error
        raise
    trainable = [p for n, p in denoiser.named_parameters() if f".{peft_name}." in n]
    if not trainable:
        raise ConfigError("adapter_params.target_modules", f"{targets!r} matched no module")
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable


def save_lora(
    denoiser: torch.nn.Module, peft_name: str, out_dir: str | Path, params: Mapping[str, Any]
) -> Path:
    """That adapter's weights only (peft's key names) plus the params that rebuild it."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    if peft_name not in getattr(denoiser, "peft_config", {}):
        raise ValueError(f"denoiser: no {peft_name!r} adapter to save (was apply() called?)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(denoiser, adapter_name=peft_name)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"adapter": peft_name})
    (out / CONFIG_FILE).write_text(
        json.dumps({"adapter": peft_name, "params": dict(params)}, indent=2, sort_keys=True)
    )
    return out


def saved_params(out_dir: str | Path, peft_names: tuple[str, ...]) -> dict[str, Any]:
    """The params a saved adapter was built with; its peft name must be one of `peft_names`."""
    out = Path(out_dir)
    path = out / CONFIG_FILE
    if path.is_file():
        config = json.loads(path.read_text())
        if config.get("adapter") not in peft_names:
            raise ValueError(
                f"{path}: adapter is {config.get('adapter')!r}, expected one of {list(peft_names)}"
            )
        return dict(config.get("params", {}))
    legacy = out / LEGACY_PARAMS_FILE
    if legacy.is_file() and "default" in peft_names:
        return dict(json.loads(legacy.read_text()))
    raise FileNotFoundError(f"{path}: no adapter config (not a saved LoRA adapter)")


def load_lora(
    denoiser: torch.nn.Module,
    peft_name: str,
    out_dir: str | Path,
    defaults: Mapping[str, Any],
    *,
    accepted_names: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Rebuild the adapter from its saved params (unless present) and load its weights exactly."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    params = resolve_params(saved_params(out_dir, (peft_name, *accepted_names)), defaults)
    if peft_name not in getattr(denoiser, "peft_config", {}):
        add_lora(denoiser, peft_name, params)
    weights = Path(out_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: adapter weights missing")
    result = cast(
        _KeyReport,
        set_peft_model_state_dict(denoiser, load_file(str(weights)), adapter_name=peft_name),
    )
    missing = [k for k in result.missing_keys if f".{peft_name}." in k]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{weights}: does not fit this {type(denoiser).__name__} (missing {missing[:3]}, "
            f"unexpected {list(result.unexpected_keys)[:3]})"
        )
    cast("PeftAdapterMixin", denoiser).set_adapter(peft_name)
    return params


def merge_lora(denoiser: torch.nn.Module) -> None:
    """Fuse every LoRA adapter into the weights it modifies and drop the LoRA layers, leaving a
    plain diffusers denoiser (the way a trained LoRA seeds a base model for the next round)."""
    model = cast("PeftAdapterMixin", denoiser)
    model.fuse_lora()  # type: ignore[attr-defined]
    model.unload_lora()  # type: ignore[attr-defined]


def lora_adapter(
    name: str,
    *,
    peft_name: str,
    defaults: Mapping[str, Any],
    description: str,
    check: CheckFn | None = None,
    accepted_names: tuple[str, ...] = (),
) -> Adapter:
    """The `Adapter` of one LoRA kind. `check(params)` may refuse params the kind does not take
    (FineStyle's fixed modules); `accepted_names` are other peft names its checkpoints may carry."""
    fixed_defaults = dict(defaults)

    def apply(denoiser: torch.nn.Module, params: dict[str, Any]) -> list[torch.nn.Parameter]:
        merged = resolve_params(params, fixed_defaults)
        if check is not None:
            check(merged)
        trainable = add_lora(denoiser, peft_name, merged)
        _remember(denoiser, peft_name, merged)
        return trainable

    def save(denoiser: torch.nn.Module, directory: Path) -> Path:
        remembered = getattr(denoiser, PARAMS_ATTRIBUTE, {}).get(peft_name)
        params = remembered or resolve_params({}, fixed_defaults)
        return save_lora(denoiser, peft_name, directory, params)

    def load(denoiser: torch.nn.Module, directory: Path) -> None:
        params = load_lora(
            denoiser, peft_name, directory, fixed_defaults, accepted_names=accepted_names
        )
        _remember(denoiser, peft_name, params)

    return Adapter(name, apply, save, load, description, merge=merge_lora)


def _remember(denoiser: torch.nn.Module, peft_name: str, params: dict[str, Any]) -> None:
    remembered = dict(getattr(denoiser, PARAMS_ATTRIBUTE, {}))
    remembered[peft_name] = params
    # torch types Module.__setattr__ as Tensor | Module only; plain attributes work at runtime.
    object.__setattr__(denoiser, PARAMS_ATTRIBUTE, remembered)
