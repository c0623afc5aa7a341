"""Tiny random Stable-Diffusion-shaped components, built offline from configs in code.

Tests, the demo and benchmarks need a whole text-to-image stack that runs on a CPU in seconds and
needs no download. The shapes follow diffusers' own `get_dummy_components()` tests (DESIGN §6b):
about 1.7 M parameters, 32 px images, 16 px latents. The tokenizer is a real CLIP BPE tokenizer
written from the vocabulary open_clip ships, so captions tokenize exactly as they would for a real
model (cut to the first `TINY_MERGES` merges so the embedding table stays small).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import training.engine  # noqa: F401  (torchvision shim before diffusers/transformers)

TINY_MERGES = 1000
TOKENIZER_MAX_LENGTH = 77
TINY_RESOLUTION = 32


def _bpe_file() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-character table of CLIP's BPE (same as open_clip and transformers)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(c) for c in codes], strict=True))


def build_clip_tokenizer(num_merges: int | None = TINY_MERGES) -> Any:
    """A transformers CLIPTokenizer from open_clip's BPE file; `None` keeps all 48,894 merges.

    With every merge the ids equal open_clip's (49,408 tokens); the special tokens use the
    Hugging Face names (`<|startoftext|>`, `<|endoftext|>`) at the same two last ids.
    """
    from transformers import CLIPTokenizer

    with gzip.open(_bpe_file()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    if num_merges is not None:
        merges = merges[:num_merges]
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    vocab_list += ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    return CLIPTokenizer(
        vocab=vocab,
        # tokenizers' BPE takes (left, right) pairs; transformers annotates this as list[str].
        merges=[tuple(m.split()) for m in merges],  # type: ignore[misc]
        model_max_length=TOKENIZER_MAX_LENGTH,
    )


TINY_FAMILIES = ("sd", "sdxl", "sd3")


def _text_config(tokenizer: Any, **extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=len(tokenizer),
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        **extra,
    )


def _tiny_vae(seed: int, **extra: Any) -> Any:
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=TINY_RESOLUTION,
        **extra,
    )


SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
}


def build_tiny_components(
    seed: int = 0, family: str = "sd", prediction_type: str = "epsilon"
) -> dict[str, Any]:
    """The components of a tiny random model of `family` ("sd", "sdxl" or "sd3"), named as that
    family's diffusers pipeline names them, plus `noise_scheduler` for training.

    Same seed, same weights: each model is built right after re-seeding torch's global RNG.
    `prediction_type` ("epsilon" or "v_prediction") applies to the DDPM-style families.
    """
    if family == "sdxl":
        return _tiny_sdxl(seed, prediction_type)
    if family == "sd3":
        return _tiny_sd3(seed)
    if family != "sd":
        raise ValueError(f"family: {family!r} is not one of {TINY_FAMILIES}")
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler

    # Concrete modules: mypy resolves the top-level names to diffusers' dummy placeholder classes.
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=TINY_RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    vae = _tiny_vae(seed + 1)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    schedule = {**SCHEDULE, "prediction_type": prediction_type}
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": DDIMScheduler(**schedule, set_alpha_to_one=False, steps_offset=1),
        "noise_scheduler": DDPMScheduler(**schedule),
    }


def _tiny_sdxl(seed: int, prediction_type: str) -> dict[str, Any]:
    """SDXL as diffusers' own SDXL pipeline tests build it: a `text_time` UNet whose added
    embedding takes 6 time ids x 8 + the second encoder's 32-d pooled projection, a CLIP text
    model and a CLIP text model with projection (hidden states concatenated: 64-d context)."""
    import torch
    from diffusers import DDPMScheduler, EulerDiscreteScheduler
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=TINY_RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
    )
    vae = _tiny_vae(seed + 1)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config(tokenizer, hidden_act="gelu", projection_dim=32))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(
        _text_config(tokenizer, hidden_act="gelu", projection_dim=32)
    )
    schedule = {**SCHEDULE, "prediction_type": prediction_type}
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer": tokenizer,
        "tokenizer_2": build_clip_tokenizer(),
        "scheduler": EulerDiscreteScheduler(
            **{k: v for k, v in schedule.items() if k != "clip_sample"},
            steps_offset=1,
            timestep_spacing="leading",
        ),
        "noise_scheduler": DDPMScheduler(**schedule),
    }


def _tiny_sd3(seed: int) -> dict[str, Any]:
    """SD3 as diffusers' SD3 pipeline tests build it, without T5 (the pipeline feeds zeros in
    its place): a one-layer MMDiT, two CLIP text models with projection (32 + 32 = 64-d pooled
    and context), a VAE with SD3's shift and scale, flow-matching Euler."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.transformer_sd3 import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=TINY_RESOLUTION // 2,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,
        pooled_projection_dim=64,
        out_channels=4,
    )
    vae = _tiny_vae(seed + 1, shift_factor=0.0609, scaling_factor=1.5035)
    config = _text_config(tokenizer, hidden_act="gelu", projection_dim=32)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModelWithProjection(config)
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(config)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return {
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "text_encoder_3": None,
        "tokenizer": tokenizer,
        "tokenizer_2": build_clip_tokenizer(),
        "tokenizer_3": None,
        "scheduler": scheduler,
        "noise_scheduler": FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
    }


def save_tiny_base_model(
    path: str | Path, seed: int = 0, family: str = "sd", prediction_type: str = "epsilon"
) -> Path:
    """Write a diffusers folder of `family` usable as a local base model.

    Loadable with the family's pipeline `from_pretrained(path, local_files_only=True)`; the
    engine's `load_base_components` reads it and detects the family from model_index.json.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from training.engine.families import get_family

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    components = build_tiny_components(seed, family, prediction_type)
    pipeline = get_family(family).pipeline(components)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # it warns about each absent (None) part it skips
    try:
        pipeline.save_pretrained(path, safe_serialization=True)
    finally:
        diffusers_logging.set_verbosity(previous)
    return path
