"""Trainable-parameter fraction of each adapter on a Stable-Diffusion-1.5-sized UNet, computed on
the meta device: the 860 M-parameter UNet is described, never allocated, so this runs anywhere in
about a second and the numbers in docs/adapters.md can be regenerated with

    python -m training.engine.param_count
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import training.engine  # noqa: F401  (torchvision shim before diffusers)

# diffusers' UNet2DConditionModel config of runwayml/stable-diffusion-v1-5 (unet/config.json).
SD15_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": (320, 640, 1280, 1280),
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
}

# The adapters compared in docs/adapters.md, with the settings reported there.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "styledrop": ("training.engine.adapters.styledrop", {"rank": 4}),
    "finestyle": ("training.engine.adapters.finestyle", {"rank": 4}),
    "styleinject": ("training.engine.adapters.styleinject", {"branches": 4, "rank": 4}),
}


@dataclass(frozen=True)
class ParamReport:
    method: str
    params: Mapping[str, Any]
    trainable: int
    base: int

    @property
    def fraction(self) -> float:
        """Trainable parameters over the base UNet's parameters (adapters excluded)."""
        return self.trainable / self.base


def meta_unet(config: Mapping[str, Any] | None = None) -> Any:
    """A UNet2DConditionModel whose parameters live on the meta device (no memory, no init)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        return UNet2DConditionModel(**dict(config or SD15_UNET_CONFIG))


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def trainable_fraction(
    method: str,
    params: Mapping[str, Any] | None = None,
    unet_config: Mapping[str, Any] | None = None,
    *,
    adapter: Any = None,
) -> ParamReport:
    """Apply `method`'s adapter to a meta UNet and count what it trains.

    `adapter` (a module or object with `apply(unet, params)`) overrides the lookup, so adapters
    registered elsewhere (the engine's `lora`) are measured the same way. `full` trains the UNet.
    """
    from accelerate import init_empty_weights

    unet = meta_unet(unet_config)
    base = count_parameters(unet)
    if method == "full" and adapter is None:
        return ParamReport(method, dict(params or {}), base, base)
    if adapter is None and method in METHODS:
        module_name, default_params = METHODS[method]
        adapter = importlib.import_module(module_name)
        params = default_params if params is None else params
    elif adapter is None:
        from training.engine.adapters import get_adapter

        adapter = get_adapter(method)  # KeyError names the known adapters
    # Adapter weights created inside the context land on the meta device too.
    with init_empty_weights():
        trainable = adapter.apply(unet, dict(params or {}))
    count = sum(p.numel() for p in trainable if p.requires_grad)
    adapter_ids = {id(p) for p in trainable}
    stray = sum(
        p.numel() for p in unet.parameters() if p.requires_grad and id(p) not in adapter_ids
    )
    if stray:
        raise AssertionError(f"{method}: {stray} parameters trainable outside the adapter")
    return ParamReport(method, dict(params or {}), count, base)


def report(methods: tuple[str, ...] = ("full", "lora", *METHODS)) -> list[ParamReport]:
    return [trainable_fraction(method) for method in methods]


def markdown_table(reports: list[ParamReport]) -> str:
    lines = [
        "| method | settings | trainable parameters | fraction of the UNet |",
        "|---|---|---:|---:|",
    ]
    for item in reports:
        settings = ", ".join(f"{k}={v}" for k, v in item.params.items()) or "—"
        lines.append(
            f"| {item.method} | {settings} | {item.trainable:,} | {100 * item.fraction:.3f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    reports = report()
    print(f"SD1.5 UNet: {reports[0].base:,} parameters")
    print(markdown_table(reports))


if __name__ == "__main__":
    main()
