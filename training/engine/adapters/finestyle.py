"""FineStyle: low-rank adapters only on the cross-attention key and value projections, trained on
concept-scaled data (`training.engine.concept_scaling`), sampled with two guidance scales.

Keys and values of cross-attention are where text tokens become image features; adapting only
them ties the learned style to words (the concept sub-prompts) rather than to pixel layout, which
is what curbs content leakage in the paper. Sampling mixes the fine-tuned model with the base
model so that style strength (λ1) and prompt fidelity (λ2) can be traded at inference time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from training.engine.adapters import Adapter, register_adapter
from training.engine.adapters.styledrop import add_lora, load_lora, merged_params, save_lora

NAME = "finestyle"
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


def apply(unet: torch.nn.Module, params: Mapping[str, Any] | None = None) -> list[Any]:
    """Freeze the UNet and add LoRA to every `attn2.to_k` / `attn2.to_v`; returns its parameters.

    params: rank (4), alpha (rank), dropout (0); lambda1/lambda2 and style_descriptor are read by
    sampling and the recipe. target_modules is fixed to the K/V projections: that is the method.
    """
    merged = merged_params(params, DEFAULTS)
    if merged["target_modules"] != KV_PROJECTIONS:
        from training.engine.config import ConfigError

        raise ConfigError(
            "adapter_params.target_modules",
            "FineStyle adapts cross-attention keys and values only; use styledrop or lora to "
            "choose other modules",
        )
    # torch types Module.__setattr__ as Tensor | Module only; plain attributes work at runtime.
    unet._finestyle_params = merged  # type: ignore[assignment]
    return add_lora(unet, NAME, merged)


def save(unet: torch.nn.Module, out_dir: str | Path) -> Path:
    return save_lora(unet, NAME, out_dir, {"params": getattr(unet, "_finestyle_params", DEFAULTS)})


def load(unet: torch.nn.Module, out_dir: str | Path) -> None:
    unet._finestyle_params = load_lora(unet, NAME, out_dir, DEFAULTS)  # type: ignore[assignment]


register_adapter(
    Adapter(
        NAME,
        apply,
        save,
        load,
        "FineStyle: LoRA on cross-attention keys and values only (attn2.to_k/to_v)",
    )
)
# DESIGN.md and the TrainingRun model call this adapter `kv_lora`. Both names build, save and load
# the same thing (the peft adapter inside is always named `finestyle`), so a checkpoint written
# under one name loads under the other.
KV_LORA_NAME = "kv_lora"
register_adapter(
    Adapter(
        KV_LORA_NAME,
        apply,
        save,
        load,
        "FineStyle K/V adapter (alias of finestyle): LoRA on attn2.to_k/to_v only",
    )
)


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


def guided_noise_prediction(
    unet: Any,
    latents: torch.Tensor,
    timestep: torch.Tensor | int,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    lambda1: float,
    lambda2: float,
) -> torch.Tensor:
    """ε for one sampler step of a UNet carrying the FineStyle adapter.

    The base prediction is the same UNet with its adapters disabled (peft), so no second copy of
    the weights is held. The adapters are enabled again before returning.
    """
    tuned_cond, tuned_uncond = unet(
        torch.cat([latents, latents]), timestep, torch.cat([cond, uncond])
    ).sample.chunk(2)
    unet.disable_adapters()
    try:
        base_cond = unet(latents, timestep, cond).sample
    finally:
        unet.enable_adapters()
    return finestyle_guidance(tuned_cond, base_cond, tuned_uncond, lambda1, lambda2)


def guidance_callable(lambda1: float, lambda2: float) -> Callable[..., torch.Tensor]:
    """A (unet, latents, t, cond, uncond) -> ε function for a generation loop's guidance hook."""

    def predict(unet: Any, latents: torch.Tensor, t: Any, cond: torch.Tensor, uncond: torch.Tensor):
        return guided_noise_prediction(unet, latents, t, cond, uncond, lambda1, lambda2)

    return predict
