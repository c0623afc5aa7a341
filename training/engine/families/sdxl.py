"""SDXL: two CLIP text encoders (penultimate hidden states concatenated; the second one's pooled
projection as `text_embeds`) and the `text_time` micro-conditioning: `time_ids` = original size,
crop top-left and target size of each training image, so a model learns what a crop looks like
instead of learning to crop."""

from __future__ import annotations

from typing import Any

import torch

from training.engine.errors import BaseModelError
from training.engine.families.base import Geometry, ModelFamily

TIME_IDS = 6  # (original h, w, crop top, left, target h, w)


class StableDiffusionXLFamily(ModelFamily):
    name = "sdxl"
    description = "SDXL (UNet with text_time conditioning, two CLIP text encoders)"
    pipeline_class = "StableDiffusionXLPipeline"

    def pipeline_extra_arguments(self) -> dict[str, Any]:
        return {"add_watermarker": False}

    def check_components(self, components: dict[str, Any]) -> None:
        unet = components["unet"]
        if unet.config.get("addition_embed_type") != "text_time":
            raise BaseModelError(
                f"unet/config.json: addition_embed_type is {unet.config.get('addition_embed_type')!r}, "
                "but an SDXL UNet takes 'text_time' conditioning"
            )
        expected = unet.add_embedding.linear_1.in_features
        projection = components["text_encoder_2"].config.projection_dim
        passed = unet.config.addition_time_embed_dim * TIME_IDS + projection
        if expected != passed:
            raise BaseModelError(
                f"unet/config.json: projection_class_embeddings_input_dim is {expected}, but "
                f"{TIME_IDS} time ids x addition_time_embed_dim "
                f"{unet.config.addition_time_embed_dim} + text_encoder_2 projection_dim "
                f"{projection} = {passed}"
            )

    def condition(
        self, pipeline: Any, captions: list[str], geometry: list[Geometry], device: torch.device
    ) -> dict[str, Any]:
        embeds, _, pooled, _ = pipeline.encode_prompt(
            prompt=captions,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        time_ids = torch.tensor([g.as_list() for g in geometry], device=device, dtype=embeds.dtype)
        return {
            "encoder_hidden_states": embeds,
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids},
        }


FAMILY = StableDiffusionXLFamily()
