"""The toy world's base model: a small Stable-Diffusion-layout stack pre-trained on photographs.

Smaller than `engine/tiny.py` where that buys speed on a CPU (8 px latents from 32 px images, no
UNet mid block, a two-layer text encoder), and trained, not random: first the VAE on
reconstruction (its scaling factor then set so latents have unit variance, as Stable Diffusion's
are), then the UNet and text encoder together on the photographs' captions with epsilon
prediction, one caption in ten dropped so classifier-free guidance has an unconditional branch.
The result is a diffusers folder every part of the platform loads like any base model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import training.engine  # noqa: F401  (torchvision shim before diffusers/transformers)
from training.engine.tiny import TOKENIZER_MAX_LENGTH, build_clip_tokenizer

CAPTION_DROPOUT = 0.1
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
}


def build_components(seed: int, resolution: int) -> dict[str, Any]:
    from diffusers import DDIMScheduler, DDPMScheduler
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=resolution,
        mid_block_add_attention=False,
    )
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=resolution // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type=None,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=TOKENIZER_MAX_LENGTH,
        )
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": DDIMScheduler(**SCHEDULE, set_alpha_to_one=False, steps_offset=1),
        "noise_scheduler": DDPMScheduler(**SCHEDULE),
    }


def _pixels(images: Sequence[Image.Image]) -> torch.Tensor:
    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def train_vae(
    vae: Any,
    images: Sequence[Image.Image],
    *,
    steps: int,
    batch_size: int,
    seed: int,
    log: Callable[[str], None],
) -> float:
    """Reconstruction training; returns the final mean squared error (pixels in [-1, 1])."""
    pixels = _pixels(images)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    vae.train()
    error = float("nan")
    for step in range(steps):
        batch = pixels[torch.randint(len(pixels), (batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        mse = torch.nn.functional.mse_loss(reconstruction, batch)
        loss = mse + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        error = mse.item()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            log(f"toy base VAE step {step + 1}/{steps}: reconstruction mse {error:.4f}")
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(pixels[:256]).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return error


def _encode_prompts(components: dict[str, Any], captions: Sequence[str]) -> torch.Tensor:
    tokens = components["tokenizer"](
        list(captions),
        padding="max_length",
        max_length=TOKENIZER_MAX_LENGTH,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return components["text_encoder"](tokens)[0]


def train_unet(
    components: dict[str, Any],
    images: Sequence[Image.Image],
    captions: Sequence[str],
    *,
    steps: int,
    batch_size: int,
    seed: int,
    log: Callable[[str], None],
) -> float:
    """UNet and text encoder on (image, caption) pairs with the VAE frozen; returns the last loss."""
    vae, unet, text_encoder = components["vae"], components["unet"], components["text_encoder"]
    noise_scheduler = components["noise_scheduler"]
    with torch.no_grad():
        latents = (
            torch.cat(
                [
                    vae.encode(_pixels(images[i : i + 64])).latent_dist.mean
                    for i in range(0, len(images), 64)
                ]
            )
            * vae.config.scaling_factor
        )
    generator = torch.Generator().manual_seed(seed)
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 1e-3, total_steps=steps, pct_start=0.05
    )
    unet.train()
    text_encoder.train()
    loss_value = float("nan")
    for step in range(steps):
        index = torch.randint(len(latents), (batch_size,), generator=generator)
        drop = torch.rand(batch_size, generator=generator) < CAPTION_DROPOUT
        batch_captions = ["" if drop[i] else captions[int(j)] for i, j in enumerate(index)]
        noise = torch.randn(latents[index].shape, generator=generator)
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator
        )
        noisy = noise_scheduler.add_noise(latents[index], noise, timesteps)
        prediction = unet(noisy, timesteps, _encode_prompts(components, batch_captions)).sample
        loss = torch.nn.functional.mse_loss(prediction, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            log(f"toy base UNet step {step + 1}/{steps}: loss {loss_value:.4f}")
    unet.eval()
    text_encoder.eval()
    return loss_value


def save_base(components: dict[str, Any], path: Path) -> Path:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    pipeline = StableDiffusionPipeline(
        unet=components["unet"],
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        scheduler=components["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path.mkdir(parents=True, exist_ok=True)
    # transformers draws a "Writing model shards" bar for the text encoder otherwise.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    pipeline.save_pretrained(path, safe_serialization=True)  # type: ignore[attr-defined]
    return path
