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


def build_tiny_components(seed: int = 0) -> dict[str, Any]:
    """UNet, VAE, text encoder, tokenizer and schedulers, randomly initialised from `seed`.

    Same seed, same weights: each model is built right after re-seeding torch's global RNG.
    """
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler

    # Concrete modules: mypy resolves the top-level names to diffusers' dummy placeholder classes.
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

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
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=TINY_RESOLUTION,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
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
        )
    )
    schedule = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
    }
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": DDIMScheduler(**schedule, set_alpha_to_one=False, steps_offset=1),
        "noise_scheduler": DDPMScheduler(**schedule),
    }


def save_tiny_base_model(path: str | Path, seed: int = 0) -> Path:
    """Write a Stable-Diffusion-layout diffusers folder usable as a local base model.

    Loadable with `StableDiffusionPipeline.from_pretrained(path, local_files_only=True)` or per
    component with `subfolder=`; the engine's `load_base_components` reads it.
    """
    from diffusers import StableDiffusionPipeline

    components = build_tiny_components(seed)
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
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # mypy sees diffusers' dummy placeholder for the top-level name (its concrete module's
    # annotations refuse safety_checker=None), so the inherited method is invisible to it.
    pipeline.save_pretrained(path, safe_serialization=True)  # type: ignore[attr-defined]
    return path
