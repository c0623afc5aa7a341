"""Generation: a checkpoint (or bare base model) over prompts x seeds with stated sampler settings.

Each image is a pure function of (weights, prompt, seed, settings): its starting noise comes from
a CPU generator seeded with the seed alone, so the same pair gives the same image on any device
and in any batch (up to float rounding of batched convolutions). Latents are decoded here rather
than by the pipeline so a 4-channel transparency decoder can return RGBA.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import training.engine  # noqa: F401  (torchvision shim before diffusers/transformers)
from training.engine.style_prompts import with_style_descriptor

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "flow_euler": "FlowMatchEulerDiscreteScheduler",
}


@dataclass
class SamplerSettings:
    scheduler: str = "ddim"
    steps: int = 25
    guidance_scale: float = 7.5
    resolution: int = 512
    negative_prompt: str | None = None
    style_suffix: str | None = None  # appended to every prompt as ", <suffix>"
    # FineStyle checkpoints sample with its two-scale guidance; None = the adapter's own λ
    finestyle_lambda1: float | None = None
    finestyle_lambda2: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplerSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"sampler.{unknown[0]}: unknown setting (known: {sorted(known)})")
        settings = cls(**data)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(
                f"sampler.scheduler: {self.scheduler!r} not one of {sorted(SCHEDULERS)}"
            )
        if not isinstance(self.steps, int) or self.steps <= 0:
            raise ValueError(f"sampler.steps: must be a positive integer, got {self.steps!r}")
        if self.guidance_scale < 0:
            raise ValueError(f"sampler.guidance_scale: must be >= 0, got {self.guidance_scale}")
        if not isinstance(self.resolution, int) or self.resolution <= 0 or self.resolution % 8:
            raise ValueError(
                f"sampler.resolution: must be a positive multiple of 8, got {self.resolution!r}"
            )
        for name in ("finestyle_lambda1", "finestyle_lambda2"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ValueError(f"sampler.{name}: must be a number >= 0, got {value!r}")

    def full_prompt(self, prompt: str) -> str:
        suffix = (self.style_suffix or "").strip().lstrip(",").strip()
        return f"{prompt}, {suffix}" if suffix else prompt

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GeneratedImage:
    prompt: str
    seed: int
    image: Image.Image
    metadata: dict[str, Any] = field(default_factory=dict)

    def png_bytes(self) -> bytes:
        return png_bytes(self.image)


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG encoding (no timestamps), so equal pixels give equal bytes and sha256."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def build_pipeline(
    *,
    checkpoint: str | Path | None = None,
    base_model: str | Path | None = None,
    device: str | torch.device | None = None,
    use_ema: bool = True,
    transparency_decoder: str | Path | None = None,
) -> Any:
    """The family's diffusers pipeline from a training checkpoint (adapter and EMA applied) or a
    base model folder; `transparency_decoder` names a folder written by
    `transparency.save_decoder`. `pipeline.engine_family` is the ModelFamily."""
    from training.engine.base_model import load_base_components
    from training.engine.checkpoint import load_checkpoint_for_inference

    if checkpoint is None and base_model is None:
        raise ValueError("generation needs a checkpoint or a base_model")
    if checkpoint is not None:
        components = load_checkpoint_for_inference(
            checkpoint, base_model=base_model, use_ema=use_ema
        )
    else:
        components = load_base_components(base_model)  # type: ignore[arg-type]
    family = components["family"]
    # Any: engine_source and alpha_decoder are attached ad hoc, and mypy resolves the top-level
    # diffusers name to its dummy placeholder class, which hides the pipeline's methods.
    pipeline: Any = family.pipeline(components)
    pipeline.engine_family = family
    pipeline.engine_config = components.get("config")
    pipeline.engine_source = {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "base_model": str(base_model or components.get("config").base_model),  # type: ignore[union-attr]
        "family": family.name,
        "adapter": components["config"].adapter if "config" in components else None,
        "transparency_decoder": str(transparency_decoder) if transparency_decoder else None,
    }
    pipeline.alpha_decoder = None
    if transparency_decoder is not None:
        from training.engine.transparency import load_decoder

        pipeline.alpha_decoder = load_decoder(transparency_decoder)
    resolved = (
        torch.device(device)
        if device
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    pipeline.to(resolved)
    if pipeline.alpha_decoder is not None:
        pipeline.alpha_decoder.to(resolved)
    return pipeline


def adopt_pipeline(pipeline: Any) -> Any:
    """Make a plain diffusers pipeline (of a family the engine knows) usable by `generate`, so
    an exported model can be compared with the engine's own generations."""
    from training.engine.families import BY_PIPELINE

    if getattr(pipeline, "engine_family", None) is not None:
        return pipeline
    family = BY_PIPELINE.get(type(pipeline).__name__)
    if family is None:
        raise ValueError(f"pipeline: {type(pipeline).__name__} is not a family the engine knows")
    pipeline.engine_family = family
    pipeline.engine_config = None
    pipeline.engine_source = {
        "checkpoint": None,
        "base_model": str(pipeline.config.get("_name_or_path", "")),
        "family": family.name,
        "adapter": None,
        "transparency_decoder": None,
    }
    pipeline.alpha_decoder = None
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def denoiser_of(pipeline: Any) -> Any:
    """The pipeline's UNet or transformer, whichever its family trains."""
    return getattr(pipeline, pipeline.engine_family.denoiser)


def _scheduler_for(pipeline: Any, name: str) -> Any:
    import diffusers

    family = pipeline.engine_family
    if name not in family.schedulers:
        raise ValueError(
            f"sampler.scheduler: {name!r} does not sample the {family.name} family; "
            f"use one of {list(family.schedulers)}"
        )
    return getattr(diffusers, SCHEDULERS[name]).from_config(pipeline.scheduler.config)


def _checkpoint_style(pipeline: Any) -> str:
    """The style descriptor the checkpoint's run trained with (appended to every prompt, as in
    training); none for a base model or a plain diffusers pipeline."""
    from training.engine.style_prompts import run_style_descriptor

    config = getattr(pipeline, "engine_config", None)
    return run_style_descriptor(config) if config is not None else ""


def _guidance(pipeline: Any, settings: SamplerSettings) -> tuple[Any, dict[str, Any]]:
    """(factory of the context the pipeline samples in, how it guides): FineStyle's λ1/λ2 guidance for a
    FineStyle checkpoint, plain classifier-free guidance otherwise."""
    from training.engine.adapters.finestyle import ADAPTER_NAMES, adapter_params, finestyle_guided

    adapter = pipeline.engine_source.get("adapter")
    overrides = {
        "finestyle_lambda1": settings.finestyle_lambda1,
        "finestyle_lambda2": settings.finestyle_lambda2,
    }
    if adapter not in ADAPTER_NAMES:
        given = [name for name, value in overrides.items() if value is not None]
        if given:
            raise ValueError(
                f"sampler.{given[0]}: the checkpoint's adapter is {adapter!r}, not FineStyle "
                f"({' or '.join(ADAPTER_NAMES)})"
            )
        return nullcontext, {"method": "cfg", "guidance_scale": settings.guidance_scale}
    denoiser = denoiser_of(pipeline)
    params = adapter_params(denoiser)
    lambda1 = (
        params["lambda1"] if settings.finestyle_lambda1 is None else settings.finestyle_lambda1
    )
    lambda2 = (
        params["lambda2"] if settings.finestyle_lambda2 is None else settings.finestyle_lambda2
    )

    def context() -> Any:
        return finestyle_guided(denoiser, float(lambda1), float(lambda2), settings.guidance_scale)

    return context, {"method": "finestyle", "lambda1": float(lambda1), "lambda2": float(lambda2)}


def _to_images(decoded: torch.Tensor) -> list[Image.Image]:
    """[-1, 1] tensors with 3 (RGB) or 4 (RGBA) channels -> PIL images, as diffusers rounds."""
    pixels = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels.permute(0, 2, 3, 1).cpu().numpy()
    mode = "RGBA" if array.shape[-1] == 4 else "RGB"
    return [Image.fromarray(item, mode=mode) for item in array]


@torch.no_grad()
def generate(
    prompts: Sequence[str],
    seeds: Sequence[int],
    settings: SamplerSettings | dict[str, Any] | None = None,
    *,
    checkpoint: str | Path | None = None,
    base_model: str | Path | None = None,
    pipeline: Any | None = None,
    device: str | None = None,
    batch_size: int = 4,
    transparency_decoder: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    content_checkpoint: str | Path | None = None,
    style_weight: float = 0.5,
) -> list[GeneratedImage]:
    """Every prompt with every seed (prompt-major order). Pass a `pipeline` from
    `build_pipeline` to reuse loaded weights across calls.

    With `content_checkpoint`, the (style) checkpoint samples together with that content
    checkpoint, StyleDrop's composition of two adapters (`composition.py`): `style_weight` λ
    mixes their predictions, (1 − λ)·content + λ·style."""
    if isinstance(settings, dict):
        settings = SamplerSettings.from_dict(settings)
    settings = settings or SamplerSettings()
    settings.validate()
    if pipeline is None:
        pipeline = build_pipeline(
            checkpoint=checkpoint,
            base_model=base_model,
            device=device,
            transparency_decoder=transparency_decoder,
        )
    adopt_pipeline(pipeline)
    pipeline.scheduler = _scheduler_for(pipeline, settings.scheduler)
    run_device = pipeline.device
    denoiser = denoiser_of(pipeline)
    scaling, shift = pipeline.engine_family.latent_scale(pipeline.vae)
    vae_scale = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
    latent_shape = (
        denoiser.config.in_channels,
        settings.resolution // vae_scale,
        settings.resolution // vae_scale,
    )
    jobs = [(prompt, int(seed)) for prompt in prompts for seed in seeds]
    descriptor = _checkpoint_style(pipeline)

    def full_prompt(prompt: str) -> str:
        return with_style_descriptor(settings.full_prompt(prompt), descriptor)

    guidance_context, guidance = _guidance(pipeline, settings)
    composition: dict[str, Any] | None = None
    compose: Any = nullcontext
    if content_checkpoint is not None:
        from training.engine.composition import composed_with, load_content_denoiser

        if guidance["method"] != "cfg":
            raise ValueError(
                "content_checkpoint: composing with a FineStyle checkpoint's own guidance is "
                "not supported; sample the FineStyle checkpoint alone"
            )
        content = load_content_denoiser(content_checkpoint, pipeline, run_device)
        composition = {"content_checkpoint": str(content_checkpoint), "style_weight": style_weight}

        def compose() -> Any:
            return composed_with(denoiser, content, style_weight)

    results: list[GeneratedImage] = []
    decoder = getattr(pipeline, "alpha_decoder", None) or pipeline.vae
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        latents = torch.stack(
            [
                torch.randn(latent_shape, generator=torch.Generator("cpu").manual_seed(seed))
                for _, seed in chunk
            ]
        ).to(run_device, denoiser.dtype)
        generators = [torch.Generator(run_device).manual_seed(seed) for _, seed in chunk]
        negative = [settings.negative_prompt] * len(chunk) if settings.negative_prompt else None
        with guidance_context(), compose():
            output = pipeline(
                prompt=[full_prompt(prompt) for prompt, _ in chunk],
                negative_prompt=negative,
                height=settings.resolution,
                width=settings.resolution,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale,
                latents=latents,
                generator=generators,
                output_type="latent",
            )
        scaled = output.images / scaling + shift
        images = _to_images(decoder.decode(scaled.to(decoder.dtype), return_dict=False)[0])
        for (prompt, seed), image in zip(chunk, images, strict=True):
            metadata = {
                **pipeline.engine_source,
                "prompt": prompt,
                "full_prompt": full_prompt(prompt),
                "seed": seed,
                "sampler": settings.to_dict(),
                "guidance": guidance,
                "composition": composition,
                "width": image.width,
                "height": image.height,
                "mode": image.mode,
                "sha256": hashlib.sha256(png_bytes(image)).hexdigest(),
            }
            results.append(GeneratedImage(prompt, seed, image, metadata))
        if progress is not None:
            progress(len(results), len(jobs))
    return results
