"""FineStyle: low-rank adapters only on the cross-attention key and value projections, trained on
concept-scaled data (`training.engine.concept_scaling`), sampled with two guidance scales.

Keys and values of cross-attention are where text tokens become image features; adapting only
them ties the learned style to words (the concept sub-prompts) rather than to pixel layout, which
is what curbs content leakage in the paper. Sampling mixes the fine-tuned model with the base
model so that style strength (λ1) and prompt fidelity (λ2) can be traded at inference time;
`generate` does so for every FineStyle checkpoint (`finestyle_guided`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from training.engine.adapters.peft_lora import PARAMS_ATTRIBUTE, lora_adapter
from training.engine.adapters.registry import register_adapter
from training.engine.errors import ConfigError

NAME = "finestyle"
KV_LORA_NAME = "kv_lora"  # DESIGN.md's and the TrainingRun model's name for the same adapter
KV_PROJECTIONS = r".*attn2\.(to_k|to_v)"

DEFAULTS: dict[str, Any] = {
    "rank": 4,
    "alpha": None,
    "dropout": 0.0,
    "target_modules": KV_PROJECTIONS,
    "style_descriptor": "",
    "lambda1": 1.0,
    "lambda2": 5.0,
}


def _check(params: dict[str, Any]) -> None:
    if params["target_modules"] != KV_PROJECTIONS:
        raise ConfigError(
            "adapter_params.target_modules",
            "FineStyle adapts cross-attention keys and values only; use styledrop or lora to "
            "choose other modules",
        )
    for name in ("lambda1", "lambda2"):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"adapter_params.{name}", f"must be a number >= 0, got {value!r}")


ADAPTER = register_adapter(
    lora_adapter(
        NAME,
        peft_name=NAME,  # both names build the same peft adapter, so checkpoints load under either
        defaults=DEFAULTS,
        check=_check,
        description="FineStyle: LoRA on cross-attention keys and values only (attn2.to_k/to_v)",
    )
)
register_adapter(
    dataclasses.replace(
        ADAPTER,
        name=KV_LORA_NAME,
        description="FineStyle K/V adapter (alias of finestyle): LoRA on attn2.to_k/to_v only",
    )
)
apply, save, load = ADAPTER.apply, ADAPTER.save, ADAPTER.load
ADAPTER_NAMES = (NAME, KV_LORA_NAME)


def adapter_params(denoiser: Any) -> dict[str, Any]:
    """The params the denoiser's FineStyle adapter was built (or loaded) with."""
    params = getattr(denoiser, PARAMS_ATTRIBUTE, {}).get(NAME)
    if params is None:
        raise ValueError("denoiser: carries no FineStyle adapter")
    return dict(params)


# ---- inference-time guidance --------------------------------------------------------------------
def finestyle_guidance(
    tuned_cond: torch.Tensor,
    base_cond: torch.Tensor,
    tuned_uncond: torch.Tensor,
    lambda1: float,
    lambda2: float,
) -> torch.Tensor:
    """Combine three noise predictions with FineStyle's two guidance scales.

        ε = ε_ft(c) + λ1 · (ε_ft(c) − ε_base(c)) + λ2 · (ε_ft(c) − ε_ft(∅))
          = (1 + λ1 + λ2) · ε_ft(c) − λ1 · ε_base(c) − λ2 · ε_ft(∅)

    λ1 pushes away from what the base model would draw for the prompt, towards what the adapter
    learned: more of the reference's style (and, too high, its details leak in). λ2 is
    classifier-free guidance on the tuned model: more of the prompt's content, countering leakage.
    λ1 = 0 is plain CFG with scale 1 + λ2; λ1 = λ2 = 0 is the tuned conditional prediction.
    """
    return tuned_cond + lambda1 * (tuned_cond - base_cond) + lambda2 * (tuned_cond - tuned_uncond)


def _second_half(value: Any, batch: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == 2 * batch:
        return value[batch:]
    if isinstance(value, dict):
        return {k: _second_half(v, batch) for k, v in value.items()}
    return value


@contextmanager
def finestyle_guided(
    denoiser: Any, lambda1: float, lambda2: float, guidance_scale: float
) -> Iterator[None]:
    """Within the block, `denoiser` (carrying a FineStyle adapter) returns predictions that make
    a diffusers pipeline's own guidance step produce FineStyle's ε.

    A pipeline with classifier-free guidance (guidance_scale g > 1) calls the denoiser on
    [∅; c] and forms u + g·(c − u). Returning u = ε_ft(∅) and c = ε_ft(∅) + (ε − ε_ft(∅))/g
    makes that exactly ε = `finestyle_guidance(...)`; so g only decides whether the pipeline
    computes the unconditional half, and the guidance strength is λ1, λ2. Without CFG (g <= 1)
    the pipeline passes c alone and gets ε_ft(c) + λ1·(ε_ft(c) − ε_base(c)) (λ2 needs ∅, so it
    must be 0 then). The base prediction is the same denoiser with its adapters disabled (no
    second copy of the weights); every family's forward works, its keyword arguments are split
    along the batch like the latents.
    """
    if guidance_scale <= 1 and lambda2 != 0:
        raise ValueError(
            f"sampler.guidance_scale: {guidance_scale} computes no unconditional prediction, "
            f"which FineStyle's lambda2={lambda2} needs; use a guidance_scale > 1 or lambda2 0"
        )
    original = denoiser.forward

    def guided(*args: Any, **kwargs: Any) -> Any:
        return_dict = kwargs.pop("return_dict", True)
        latents: torch.Tensor = args[0] if args else kwargs.get("sample", kwargs["hidden_states"])
        tuned = original(*args, **kwargs, return_dict=False)[0]
        if guidance_scale > 1:
            batch = latents.shape[0] // 2
            tuned_uncond, tuned_cond = tuned[:batch], tuned[batch:]
            cond_args = tuple(_second_half(a, batch) for a in args)
            cond_kwargs = {k: _second_half(v, batch) for k, v in kwargs.items()}
        else:
            tuned_uncond, tuned_cond = tuned, tuned  # λ2 is 0: ∅ is never used
            cond_args, cond_kwargs = args, kwargs
        denoiser.disable_adapters()
        try:
            base_cond = original(*cond_args, **cond_kwargs, return_dict=False)[0]
        finally:
            denoiser.enable_adapters()
        epsilon = finestyle_guidance(tuned_cond, base_cond, tuned_uncond, lambda1, lambda2)
        if guidance_scale > 1:
            shaped = torch.cat(
                [tuned_uncond, tuned_uncond + (epsilon - tuned_uncond) / guidance_scale]
            )
        else:
            shaped = epsilon
        if return_dict:
            from diffusers.models.modeling_outputs import Transformer2DModelOutput
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            if hasattr(denoiser, "add_embedding") or type(denoiser).__name__.startswith("UNet"):
                return UNet2DConditionOutput(sample=shaped)
            return Transformer2DModelOutput(sample=shaped)
        return (shaped,)

    denoiser.forward = guided
    try:
        yield
    finally:
        del denoiser.forward  # the instance attribute shadowed the class's method
