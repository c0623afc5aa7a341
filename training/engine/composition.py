"""StyleDrop's "sampling from two adapters": my content in my style.

StyleDrop trains a style adapter (on the style references) and, separately, a content adapter
(DreamBooth-style, on photos of one subject), and samples from both at once so the output shows
that subject in that style, which neither adapter alone draws. The paper (on Muse) interpolates
the two models' predictions; on a diffusion denoiser that is

    ε = (1 − λ) · ε_content + λ · ε_style            at every step, for ∅ and for c alike

so the pipeline's classifier-free guidance on top is the same interpolation of the two guided
predictions (guidance is linear). λ = `style_weight`: 0 is the content model alone, 1 the style
model alone. The text available to us gives the idea, not an equation; this is the linear
product-of-experts form in noise space.

The content model is a second copy of the base with its own adapter (any kind, any name), so
two LoRAs of the same kind never clash in one denoiser; both must share the base model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def load_content_denoiser(
    content_checkpoint: str | Path, pipeline: Any, device: torch.device | str
) -> Any:
    """The content checkpoint's denoiser (adapter and EMA applied), checked against the style
    pipeline: same family and same base model, or a ValueError naming `content_checkpoint`."""
    from training.engine.checkpoint import (
        checkpoint_family,
        load_checkpoint_for_inference,
        read_checkpoint_config,
    )

    path = Path(content_checkpoint)
    try:
        content_config = read_checkpoint_config(path)
    except FileNotFoundError as error:
        raise ValueError(f"content_checkpoint: {error}") from error
    family = pipeline.engine_family
    if checkpoint_family(path) != family.name:
        raise ValueError(
            f"content_checkpoint: {path} was trained on a {checkpoint_family(path)} model, the "
            f"style checkpoint on a {family.name} model"
        )
    style_base = pipeline.engine_source.get("base_model")
    if style_base and Path(content_config.base_model).resolve() != Path(style_base).resolve():
        raise ValueError(
            f"content_checkpoint: {path} was trained on {content_config.base_model}, the style "
            f"checkpoint on {style_base}; both adapters must sit on the same base model"
        )
    components = load_checkpoint_for_inference(path, base_model=style_base or None)
    denoiser = components[family.denoiser]
    return denoiser.to(device, getattr(pipeline, family.denoiser).dtype)


@contextmanager
def composed_with(
    style_denoiser: Any, content_denoiser: Any, style_weight: float
) -> Iterator[None]:
    """Within the block, `style_denoiser` (the pipeline's) returns the λ-interpolation of its
    own prediction and the content denoiser's for the same inputs."""
    if not 0 <= style_weight <= 1:
        raise ValueError(f"style_weight: must be in [0, 1], got {style_weight}")
    original = style_denoiser.forward

    def composed(*args: Any, **kwargs: Any) -> Any:
        return_dict = kwargs.pop("return_dict", True)
        style = original(*args, **kwargs, return_dict=False)[0]
        content = content_denoiser(*args, **kwargs, return_dict=False)[0]
        mixed = (1 - style_weight) * content + style_weight * style
        if return_dict:
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=mixed)  # every output type has `.sample`
        return (mixed,)

    style_denoiser.forward = composed
    try:
        yield
    finally:
        del style_denoiser.forward  # the instance attribute shadowed the class's method
