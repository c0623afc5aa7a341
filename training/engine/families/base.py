"""The one interface between the engine and a model family (SD 1.x/2.x, SDXL, SD3 flow matching).

A family owns everything that differs between model layouts, so the loop, recipes, adapters and
generation never branch on one:

- `load(folder)`: the components (named as the family's diffusers pipeline names them, so they
  are its constructor's arguments), plus `noise_scheduler` for training;
- `condition(pipeline, captions, geometry, device)`: prompt encoding (one or two CLIP encoders,
  pooled embeddings, T5 where there is one) and extra conditioning (SDXL's `time_ids`), as the
  keyword arguments of the denoiser's forward;
- `noise(scheduler, latents, noise, timesteps)`: the noisy input, the denoiser's timestep and
  the loss target (epsilon, v-prediction or flow-matching velocity);
- `predict(denoiser, noisy, timesteps, conditioning)`: one denoiser forward;
- `pipeline(components)`: the diffusers pipeline that generates.

Timesteps are always integers in [0, T) on the training noise axis, T = `num_train_timesteps`,
larger = noisier. For DDPM-style families that is the scheduler's timestep; for flow matching it
is sigma = t / T. Recipes (Style Tailoring's t_s included) therefore plan on one axis whatever
the family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

import training.engine  # noqa: F401  (torchvision shim before diffusers/transformers)
from training.engine.errors import BaseModelError

# Entries of model_index.json a family may leave null.
OPTIONAL_PARTS = frozenset(
    {"safety_checker", "feature_extractor", "image_encoder", "text_encoder_3", "tokenizer_3"}
)
MODEL_FILE_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class Geometry:
    """Where a training image came from: SDXL's micro-conditioning (original size, top-left crop
    and target size, each (height, width) in pixels), recorded for every family."""

    original_size: tuple[int, int]
    crop_top_left: tuple[int, int]
    target_size: tuple[int, int]

    def as_list(self) -> list[int]:
        return [*self.original_size, *self.crop_top_left, *self.target_size]

    @classmethod
    def from_list(cls, values: Sequence[int]) -> Geometry:
        v = [int(x) for x in values]
        return cls((v[0], v[1]), (v[2], v[3]), (v[4], v[5]))


class ModelFamily:
    """Base class: what DDPM-style (epsilon / v-prediction) UNet families share."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    pipeline_class: ClassVar[str] = ""
    denoiser: ClassVar[str] = "unet"  # the component that trains: "unet" or "transformer"
    # Sampler names (generation.SCHEDULERS) this family's denoiser can be sampled with.
    schedulers: ClassVar[tuple[str, ...]] = (
        "ddim",
        "ddpm",
        "pndm",
        "euler",
        "euler_ancestral",
        "dpmpp_2m",
        "unipc",
    )
    # LoRA exports: the prefix diffusers' `save_lora_weights` puts on the denoiser's keys.
    lora_prefix: ClassVar[str] = "unet"
    # Noise axis meaning, for configs and docs.
    noise_axis: ClassVar[str] = "timestep"
    # Config fields this family cannot honour -> why; checked before training starts.
    unsupported_options: ClassVar[dict[str, str]] = {}

    # ---- loading ---------------------------------------------------------------------------
    def pipeline_type(self) -> Any:
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def load(self, path: str | Path, *, variant: str | None = None) -> dict[str, Any]:
        """Every component on the CPU in float32 (trainable weights need it; mixed precision is
        the loop's business), the folder's scheduler for sampling and `noise_scheduler` for
        training. Optional parts the folder lacks (T5, safety checker) are None."""
        import inspect
        import json

        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        cls = self.pipeline_type()
        index = json.loads((Path(path) / "model_index.json").read_text())
        accepted = set(inspect.signature(cls.__init__).parameters)
        absent = {
            name: None
            for name in OPTIONAL_PARTS & accepted
            if not (isinstance(index.get(name), list) and index[name][0] is not None)
        }
        pipeline = cls.from_pretrained(
            str(path),
            local_files_only=True,
            dtype=torch.float32,
            variant=variant,
            **{**absent, **self.pipeline_extra_arguments()},
        )
        components = {k: v for k, v in pipeline.components.items()}
        components["noise_scheduler"] = self.training_scheduler(components["scheduler"].config)
        return components

    def pipeline_extra_arguments(self) -> dict[str, Any]:
        return {}

    def training_scheduler(self, config: Any) -> Any:
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(config)

    def pipeline(self, components: dict[str, Any]) -> Any:
        """The family's diffusers pipeline over `components` (extra keys are ignored)."""
        import inspect

        cls = self.pipeline_type()
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        arguments = {k: components.get(k) for k in accepted if k in components}
        arguments.update(
            {k: v for k, v in self.pipeline_extra_arguments().items() if k in accepted}
        )
        pipeline = cls(**arguments)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def check_components(self, components: dict[str, Any]) -> None:
        """Raise BaseModelError when a folder's components do not fit this family."""

    # ---- the training objective ------------------------------------------------------------
    def prediction_type(self, scheduler: Any) -> str:
        return str(scheduler.config.get("prediction_type", "epsilon"))

    def num_train_timesteps(self, scheduler: Any) -> int:
        return int(scheduler.config.num_train_timesteps)

    def noise(
        self, scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy latents, the denoiser's timestep input, loss target)."""
        noisy = scheduler.add_noise(latents, noise, timesteps)
        kind = self.prediction_type(scheduler)
        if kind == "v_prediction":
            target = scheduler.get_velocity(latents, noise, timesteps)
        elif kind == "epsilon":
            target = noise
        else:
            raise BaseModelError(
                f"scheduler/scheduler_config.json: prediction_type {kind!r} is not trained by "
                f"the {self.name} family (epsilon or v_prediction)"
            )
        return noisy, timesteps, target

    def snr(self, scheduler: Any, timesteps: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep (min-SNR-γ)."""
        alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        return alphas / (1 - alphas)

    def min_snr_weights(
        self, scheduler: Any, timesteps: torch.Tensor, gamma: float
    ) -> torch.Tensor:
        """Per-sample loss weights of min-SNR-γ (Hang et al. 2023) for this family's target."""
        snr = self.snr(scheduler, timesteps)
        clipped = torch.minimum(snr, torch.full_like(snr, gamma))
        if self.prediction_type(scheduler) == "v_prediction":
            return clipped / (snr + 1)
        return clipped / snr.clamp(min=1e-8)

    # ---- conditioning and forward ----------------------------------------------------------
    def condition(
        self, pipeline: Any, captions: list[str], geometry: list[Geometry], device: torch.device
    ) -> dict[str, Any]:
        raise NotImplementedError

    def predict(
        self,
        denoiser: Any,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: dict[str, Any],
    ) -> torch.Tensor:
        return denoiser(noisy, timesteps, **conditioning, return_dict=False)[0]

    # ---- latents ---------------------------------------------------------------------------
    def pixel_multiple(self, vae: Any, denoiser: Any) -> int:
        """Image sides must be multiples of this: the VAE's downsampling times the denoiser's
        (a UNet halves the latent once per block but the last)."""
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        return vae_factor * 2 ** (len(denoiser.config.block_out_channels) - 1)

    @staticmethod
    def latent_scale(vae: Any) -> tuple[float, float]:
        """(scaling_factor, shift_factor): training latents are (z - shift) * scale."""
        shift = getattr(vae.config, "shift_factor", None)
        return float(vae.config.scaling_factor), float(shift or 0.0)


def cast_conditioning(conditioning: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """Floating tensors (also inside nested dicts such as added_cond_kwargs) to `dtype`."""

    def cast(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(dtype)
        if isinstance(value, dict):
            return {k: cast(v) for k, v in value.items()}
        return value

    return {k: cast(v) for k, v in conditioning.items()}


def select_conditioning(conditioning: dict[str, Any], index: torch.Tensor) -> dict[str, Any]:
    """The rows `index` of every tensor in a conditioning dict (one bucket of a batch)."""

    def pick(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value[index.to(value.device)]
        if isinstance(value, dict):
            return {k: pick(v) for k, v in value.items()}
        return value

    return {k: pick(v) for k, v in conditioning.items()}
