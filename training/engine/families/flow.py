"""Flow matching in the SD3 layout: an MMDiT transformer, two CLIP encoders (pooled projections
concatenated) and optionally T5 (without `text_encoder_3`, diffusers feeds zero T5 embeddings).

Rectified flow: x_sigma = (1 - sigma) x0 + sigma * noise, and the transformer predicts the
velocity noise - x0. The engine's noise axis maps to sigma = t / T (T = the scheduler's
num_train_timesteps, 1000), and the transformer's timestep input is sigma * T, as the SD3
pipeline feeds it. So Style Tailoring's `t_s` is the sigma t_s / T: alignment samples train on
sigma in [t_s / T, 1) (high noise: layout and content), style samples on [0, t_s / T). The
scheduler's `shift` only reshapes the sampling schedule at inference.
"""

from __future__ import annotations

from typing import Any

import torch

from training.engine.families.base import Geometry, ModelFamily


class SD3FlowFamily(ModelFamily):
    name = "sd3"
    description = "SD3 layout, flow matching (MMDiT transformer, two CLIP encoders, optional T5)"
    pipeline_class = "StableDiffusion3Pipeline"
    denoiser = "transformer"
    schedulers = ("flow_euler",)
    lora_prefix = "transformer"
    noise_axis = "sigma"
    unsupported_options = {
        # min-SNR-γ is derived for the epsilon / v targets of a variance-preserving process;
        # flow matching weights its loss by other schemes (logit-normal, cosmap), so the option
        # is refused rather than applied by a formula that does not hold here.
        "min_snr_gamma": "min-SNR-γ weighting is defined for epsilon/v-prediction, not for flow "
        "matching (the sd3 family); leave it null",
    }

    def pixel_multiple(self, vae: Any, denoiser: Any) -> int:
        """The VAE's downsampling times the transformer's patch size."""
        return 2 ** (len(vae.config.block_out_channels) - 1) * int(denoiser.config.patch_size)

    def training_scheduler(self, config: Any) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(config)

    def prediction_type(self, scheduler: Any) -> str:
        return "flow_matching"

    def sigmas(self, scheduler: Any, timesteps: torch.Tensor) -> torch.Tensor:
        return timesteps.float() / self.num_train_timesteps(scheduler)

    def noise(
        self, scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sigma = self.sigmas(scheduler, timesteps).view(-1, *([1] * (latents.ndim - 1)))
        noisy = (1.0 - sigma) * latents + sigma * noise
        model_timesteps = timesteps.float()  # = sigma * T
        return noisy, model_timesteps, noise - latents

    def snr(self, scheduler: Any, timesteps: torch.Tensor) -> torch.Tensor:
        sigma = self.sigmas(scheduler, timesteps).clamp(1e-6, 1 - 1e-6)
        return ((1 - sigma) / sigma) ** 2

    def min_snr_weights(
        self, scheduler: Any, timesteps: torch.Tensor, gamma: float
    ) -> torch.Tensor:
        raise NotImplementedError(self.unsupported_options["min_snr_gamma"])

    def condition(
        self, pipeline: Any, captions: list[str], geometry: list[Geometry], device: torch.device
    ) -> dict[str, Any]:
        embeds, _, pooled, _ = pipeline.encode_prompt(
            prompt=captions,
            prompt_2=None,
            prompt_3=None,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def predict(
        self,
        denoiser: Any,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: dict[str, Any],
    ) -> torch.Tensor:
        return denoiser(hidden_states=noisy, timestep=timesteps, **conditioning, return_dict=False)[
            0
        ]


FAMILY = SD3FlowFamily()
