"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, a UNet, epsilon or v-prediction (the
scheduler's `prediction_type` says which; SD 2.x 768 models use v-prediction)."""

from __future__ import annotations

from typing import Any

import torch

from training.engine.families.base import Geometry, ModelFamily


class StableDiffusionFamily(ModelFamily):
    name = "sd"
    description = "Stable Diffusion 1.x/2.x (UNet, one CLIP text encoder; epsilon or v-prediction)"
    pipeline_class = "StableDiffusionPipeline"

    def pipeline_extra_arguments(self) -> dict[str, Any]:
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    def condition(
        self, pipeline: Any, captions: list[str], geometry: list[Geometry], device: torch.device
    ) -> dict[str, Any]:
        embeds, _ = pipeline.encode_prompt(
            captions, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"encoder_hidden_states": embeds}


FAMILY = StableDiffusionFamily()
