"""Real-size UNets for `bench/training.py`: SD 1.5 (64×64 latents) and SDXL (small latents), LoRA,
batch 1, random weights in the published architectures.

Engine step (`Trainer.train_step`: cached latents, prompt encoding, accelerate, LoRA step) vs a
bare diffusers loop on the same tensors (one batch the engine drew, its conditioning, the same
UNet and LoRA parameters, its own AdamW), timed in alternating blocks; and the latent cache's
gain at fixed UNet cost: a whole epoch and its data path (read + VAE encode vs cache read).

The models are built in memory and handed to the Trainer by replacing its folder loader for the
bench: written to disk they would be 3.4 GB (SD 1.5) and 10 GB (SDXL) of random weights that
nothing else reads. The VAE is the real SD/SDXL VAE architecture (its encoder is the cost the
cache removes); the text encoders are one-layer CLIPs of the real widths (768; 768 + 1280
with projection for SDXL), since prompt encoding is not what is measured.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import training.engine  # noqa: F401  (torchvision shim before diffusers)
from training.engine.param_count import SD15_UNET_CONFIG

# diffusers' UNet2DConditionModel config of stabilityai/stable-diffusion-xl-base-1.0.
SDXL_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "attention_head_dim": (5, 10, 20),
    "block_out_channels": (320, 640, 1280),
    "cross_attention_dim": 2048,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": (1, 2, 10),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "use_linear_projection": True,
}
SD_VAE_CONFIG: dict[str, Any] = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "sample_size": 512,
}
SIZES = {
    # name: (UNet config, family, resolution in pixels)
    "sd15": (SD15_UNET_CONFIG, "sd", 512),  # 64×64 latents
    "sdxl": (SDXL_UNET_CONFIG, "sdxl", 256),  # 32×32 latents: "small latent size"
}


def _clip(tokenizer: Any, hidden: int, projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=1,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection or hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)
    return model.eval()


def build_components(size: str) -> dict[str, Any]:
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    from training.engine.families import ModelFolder, get_family
    from training.engine.tiny import SCHEDULE, build_clip_tokenizer

    unet_config, family_name, _ = SIZES[size]
    torch.manual_seed(0)
    tokenizer = build_clip_tokenizer()
    components: dict[str, Any] = {
        "unet": UNet2DConditionModel(**unet_config),
        "vae": AutoencoderKL(**SD_VAE_CONFIG).eval(),
        "tokenizer": tokenizer,
        "scheduler": DDIMScheduler(**SCHEDULE, set_alpha_to_one=False, steps_offset=1),
        "noise_scheduler": DDPMScheduler(**SCHEDULE),
    }
    if family_name == "sdxl":
        components["text_encoder"] = _clip(tokenizer, 768)
        components["tokenizer_2"] = tokenizer
        components["text_encoder_2"] = _clip(tokenizer, 1280, projection=1280)
    else:
        components["text_encoder"] = _clip(tokenizer, 768)
    family = get_family(family_name)
    family.check_components(components)
    components["family"] = family
    components["model_folder"] = ModelFolder(
        Path(f"in-memory-{size}"), family_name, family.pipeline_class, {}
    )
    return components


def _timed(function: Any, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def bench_size(size: str, work: Path, *, blocks: int, block_steps: int, images: int) -> dict:
    import torch
    import torch.nn.functional as F

    import training.engine.loop as loop
    from training.engine.config import TrainConfig
    from training.engine.families import cast_conditioning
    from training.engine.toydata import write_toy_dataset

    _, _, resolution = SIZES[size]
    components = build_components(size)
    spec = write_toy_dataset(work / f"data-{size}", "domain", images, seed=0, size=resolution)
    original_loader = loop.load_base_components
    loop.load_base_components = lambda path: components  # in-memory model, see the module doc
    try:
        config = TrainConfig.from_dict(
            {
                "recipe": "domain",
                "base_model": str(work / f"in-memory-{size}"),
                "output_dir": str(work / f"run-{size}"),
                "datasets": {"domain": spec},
                "adapter": "lora",
                "adapter_params": {"rank": 4},
                "resolution": resolution,
                "batch_size": 1,
                "steps": 10_000,
                "checkpoint_every": 10_000,
                "learning_rate": 1e-4,
                "latent_cache_dir": str(work / f"latents-{size}"),
            }
        )
        engine = loop.Trainer(config, device="cpu")
    finally:
        loop.load_base_components = original_loader

    # Cold data path (read, resize, VAE encode) vs warm cache, at no UNet cost.
    cold_draws = _timed(engine.draw_batch, images)  # first epoch: fills the cache
    warm_draws = _timed(engine.draw_batch, images)
    cold_draw, warm_draw = statistics.median(cold_draws), statistics.median(warm_draws)

    unet = engine.unwrapped_denoiser()
    scheduler = engine.noise_scheduler
    batch = engine.draw_batch()
    conditioning = cast_conditioning(batch.conditioning, torch.float32)
    optimizer = torch.optim.AdamW(engine.trainable, lr=1e-4)

    def bare() -> float:
        noise = torch.randn_like(batch.latents)
        timesteps = torch.randint(0, 1000, (batch.latents.shape[0],))
        noisy = scheduler.add_noise(batch.latents, noise, timesteps)
        prediction = unet(noisy, timesteps, **conditioning).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(engine.trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    _timed(engine.train_step, 1)  # warm-up: allocator, lazy inits
    _timed(bare, 1)
    engine_times, bare_times = [], []
    for _ in range(blocks):
        engine_times += _timed(engine.train_step, block_steps)
        bare_times += _timed(bare, block_steps)
    engine_step, bare_step = statistics.median(engine_times), statistics.median(bare_times)
    # An epoch at fixed UNet cost: the same UNet step, plus the cold or the warm data path.
    return {
        "model": size,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "latent_size": resolution // 8,
        "step_time_vs_bare": round(engine_step / bare_step, 3),
        "engine_step_s": round(engine_step, 3),
        "bare_step_s": round(bare_step, 3),
        "latent_cache_epoch_speedup": round((bare_step + cold_draw) / (bare_step + warm_draw), 3),
        "latent_cache_data_path_speedup": round(cold_draw / warm_draw, 3),
        "draw_s_cold": round(cold_draw, 4),
        "draw_s_warm_cache": round(warm_draw, 4),
        "steps_timed_each": len(engine_times),
    }
