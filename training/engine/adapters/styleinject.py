"""StyleInject: parallel low-rank branches mixed by a per-input router, injected as a change of
the features' variance rather than added to them (StyleInject, 2024).

For a frozen linear layer h = W x over a set of tokens x (B, N, d_in):

    p      = softmax(R · mean_N(x))                       router over n branches, per input
    z      = Σ_i p_i · A_i x                              n down-projections A_i (r x d_in)
    s      = (α / r) · U z                                one shared up-projection U (d_out x r)

- visual targets (`inject_targets`, default the queries): AdaIN-like variance injection.
  μ, σ are h's per-channel mean and standard deviation over the tokens, ĥ = (h − μ) / σ, and the
  style parameters Δσ = mean_N(s) (one per input and channel) give
      out = μ + (σ + Δσ) · ĥ  (= h + Δσ · ĥ)
  so the channel means — what the text put there — are kept exactly, and the style moves only the
  spread. U starts at zero (as LoRA's up-projection), so at initialisation out = h.
- other targets (`additive_targets`, default the values, which carry text features in
  cross-attention): out = h + s, the multi-branch low-rank update without injection, as the paper
  does for `to_v`.

The paper derives Δσ with a one-layer hypernetwork on the branch output; here the shared
up-projection U plays that role, which keeps the parameter count at LoRA's level.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import training.engine  # noqa: F401
from training.engine.adapters.registry import Adapter, register_adapter
from training.engine.config import ConfigError

NAME = "styleinject"
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"

DEFAULTS: dict[str, Any] = {
    "branches": 4,
    "rank": 4,
    "alpha": None,  # None: alpha = rank
    "inject_targets": r".*attn[12]\.to_q",
    "additive_targets": r".*attn[12]\.to_v",
    "eps": 1e-5,
}


class StyleInjectLinear(nn.Module):
    """A frozen `nn.Linear` plus StyleInject's router, branches and shared up-projection."""

    def __init__(
        self,
        base: nn.Linear,
        branches: int,
        rank: int,
        alpha: float | None = None,
        *,
        inject_variance: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.branches, self.rank = branches, rank
        self.scale = (alpha if alpha is not None else rank) / rank
        self.inject_variance, self.eps = inject_variance, eps
        device, dtype = base.weight.device, base.weight.dtype
        self.router = nn.Linear(base.in_features, branches, device=device, dtype=dtype)
        self.down = nn.Parameter(
            torch.empty(branches, rank, base.in_features, device=device, dtype=dtype)
        )
        self.up = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        for index in range(branches):  # LoRA's init for A; U = 0 makes the start exact
            nn.init.kaiming_uniform_(self.down.data[index], a=math.sqrt(5))
        nn.init.zeros_(self.router.weight)
        nn.init.zeros_(self.router.bias)

    def router_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n) branch probabilities, one distribution per input (tokens pooled first)."""
        pooled = x.mean(1) if x.ndim == 3 else x
        return torch.softmax(self.router(pooled).float(), dim=-1).to(x.dtype)

    def style_features(self, x: torch.Tensor) -> torch.Tensor:
        """s = (α/r) · U Σ_i p_i A_i x, same leading shape as x."""
        weights = self.router_weights(x)  # (B, n)
        z = torch.einsum("...d,nrd->...nr", x, self.down)
        if x.ndim == 3:
            mixed = torch.einsum("bknr,bn->bkr", z, weights)
        else:
            mixed = torch.einsum("bnr,bn->br", z, weights)
        return self.scale * mixed @ self.up.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.base(x)
        style = self.style_features(x)
        if not self.inject_variance or x.ndim != 3:
            return hidden + style
        mean = hidden.mean(1, keepdim=True)
        std = hidden.std(1, keepdim=True, unbiased=False)
        normalised = (hidden - mean) / (std + self.eps)
        delta_sigma = style.mean(1, keepdim=True)  # (B, 1, d_out)
        return hidden + delta_sigma * normalised

    def adapter_state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.router.weight": self.router.weight,
            f"{prefix}.router.bias": self.router.bias,
            f"{prefix}.down": self.down,
            f"{prefix}.up": self.up,
        }


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"adapter_params.{unknown[0]}", f"unknown parameter (known: {', '.join(DEFAULTS)})"
        )
    merged = {**DEFAULTS, **params}
    for name in ("branches", "rank"):
        value = merged[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(
                f"adapter_params.{name}", f"must be a positive integer, got {value!r}"
            )
    alpha = merged["alpha"]
    if alpha is not None and (not isinstance(alpha, int | float) or alpha <= 0):
        raise ConfigError("adapter_params.alpha", f"must be a positive number, got {alpha!r}")
    for name in ("inject_targets", "additive_targets"):
        value = merged[name]
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"adapter_params.{name}", "must be a regular expression or null")
        if value:
            try:
                re.compile(value)
            except re.error as error:
                raise ConfigError(
                    f"adapter_params.{name}", f"bad regular expression: {error}"
                ) from error
    return merged


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def wrapped_layers(unet: nn.Module) -> dict[str, StyleInjectLinear]:
    return {n: m for n, m in unet.named_modules() if isinstance(m, StyleInjectLinear)}


def apply(unet: nn.Module, params: Mapping[str, Any] | None = None) -> list[nn.Parameter]:
    """Freeze the UNet and wrap matching linear layers; returns the adapter parameters.

    params: branches n (4), rank r (4), alpha (r), inject_targets (regex, default the attention
    queries), additive_targets (regex, default the attention values; null for none), eps.
    """
    merged = _params(params)
    if wrapped_layers(unet):
        raise ValueError("unet: StyleInject is already applied")
    unet.requires_grad_(False)
    plan: list[tuple[str, nn.Linear, bool]] = []
    for name, module in unet.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if merged["inject_targets"] and re.fullmatch(merged["inject_targets"], name):
            plan.append((name, module, True))
        elif merged["additive_targets"] and re.fullmatch(merged["additive_targets"], name):
            plan.append((name, module, False))
    if not plan:
        raise ConfigError(
            "adapter_params.inject_targets",
            f"{merged['inject_targets']!r} / {merged['additive_targets']!r} match no linear layer",
        )
    trainable: list[nn.Parameter] = []
    for name, module, inject in plan:
        wrapper = StyleInjectLinear(
            module,
            merged["branches"],
            merged["rank"],
            merged["alpha"],
            inject_variance=inject,
            eps=merged["eps"],
        )
        _set_module(unet, name, wrapper)
        trainable += [*wrapper.router.parameters(), wrapper.down, wrapper.up]  # weight, bias
    # torch types Module.__setattr__ as Tensor | Module only; plain attributes work at runtime.
    unet._styleinject_params = merged  # type: ignore[assignment]
    return trainable


def adapter_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name, layer in wrapped_layers(unet).items():
        state.update(layer.adapter_state(name))
    return state


def save(unet: nn.Module, out_dir: str | Path) -> Path:
    """Adapter weights only, as safetensors, plus the params needed to rebuild the wrappers."""
    from safetensors.torch import save_file

    state = adapter_state_dict(unet)
    if not state:
        raise ValueError("unet: no StyleInject layers to save (was apply() called?)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in state.items()},
        str(out / WEIGHTS_FILE),
        metadata={"adapter": NAME},
    )
    config = {"adapter": NAME, "params": unet._styleinject_params}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    return out


def load(unet: nn.Module, out_dir: str | Path) -> None:
    """Wrap the UNet as it was at save time (unless already wrapped) and load the weights."""
    from safetensors.torch import load_file

    out = Path(out_dir)
    config_path, weights_path = out / CONFIG_FILE, out / WEIGHTS_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path}: no adapter config (not a saved StyleInject adapter)"
        )
    config = json.loads(config_path.read_text())
    if config.get("adapter") != NAME:
        raise ValueError(f"{config_path}: adapter is {config.get('adapter')!r}, expected {NAME!r}")
    if not wrapped_layers(unet):
        apply(unet, config.get("params", {}))
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: adapter weights missing")
    saved = load_file(str(weights_path))
    current = adapter_state_dict(unet)
    missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: does not fit this UNet (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    with torch.no_grad():
        for key, tensor in current.items():
            if tensor.shape != saved[key].shape:
                raise ValueError(
                    f"{weights_path}: {key} has shape {tuple(saved[key].shape)}, "
                    f"expected {tuple(tensor.shape)}"
                )
            tensor.copy_(saved[key].to(tensor.device, tensor.dtype))


register_adapter(
    Adapter(
        NAME,
        apply,
        save,
        load,
        "StyleInject: routed multi-branch low-rank adapter with variance injection",
    )
)
