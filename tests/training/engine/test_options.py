"""Training options people expect from diffusers' and kohya's trainers: each validated with a
field-named error, recorded in lineage, and shown to change what the loop does."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image

from training.engine.checkpoint import read_lineage
from training.engine.config import ConfigError, TrainConfig
from training.engine.data import ImageOptions, load_image
from training.engine.loop import Trainer
from training.engine.run import run_training


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_fit", "stretch"),
        ("background_color", [255, 255]),
        ("background_color", [0, 0, 300]),
        ("random_flip", 1.5),
        ("caption_dropout", -0.1),
        ("noise_offset", 2.0),
        ("min_snr_gamma", 0),
        ("optimizer", "sgd"),
    ],
)
def test_bad_option_values_name_their_field(make_config, field, value):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict(make_config(**{field: value}))
    assert caught.value.field == field


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="installed")
def test_8bit_adam_without_bitsandbytes_is_refused_before_training(make_config):
    with pytest.raises(ConfigError, match="optimizer: 'adamw_8bit' needs bitsandbytes"):
        TrainConfig.from_dict(make_config(optimizer="adamw_8bit"))


def test_an_option_the_family_cannot_honour_is_refused_before_training(make_config, family_bases):
    config = TrainConfig.from_dict(
        make_config(base_model=str(family_bases("sd3")), adapter="lora", min_snr_gamma=5.0)
    )
    with pytest.raises(ConfigError, match="min_snr_gamma: .*not for flow matching"):
        Trainer(config, device="cpu")


def _wide_sticker() -> Image.Image:
    """64x16, transparent, with a red bar at the far left and a green bar at the far right."""
    image = Image.new("RGBA", (64, 16), (0, 0, 0, 0))
    for x in range(4):
        for y in range(16):
            image.putpixel((x, y), (255, 0, 0, 255))
            image.putpixel((63 - x, y), (0, 255, 0, 255))
    return image


def test_pad_keeps_a_wide_sticker_whole_where_centre_crop_cuts_its_edges():
    blue = ImageOptions("pad", (0, 0, 255))
    padded, geometry, _ = load_image(_wide_sticker(), 32, blue)
    cropped, crop_geometry, _ = load_image(
        _wide_sticker(), 32, ImageOptions("center_crop", (0, 0, 255))
    )
    to_rgb = lambda t: ((t.permute(1, 2, 0).numpy() + 1) * 127.5).round()  # noqa: E731
    pad, crop = to_rgb(padded), to_rgb(cropped)
    assert pad[16, 0].tolist() == [255, 0, 0] and pad[16, 31].tolist() == [0, 255, 0]
    assert pad[0, 16].tolist() == [0, 0, 255]  # padding and alpha on the configured colour
    assert not (crop[..., 0] > 200).any() and not (crop[..., 1] > 200).any()  # the edges are lost
    assert geometry.original_size == (16, 64) and geometry.crop_top_left == (-12, 0)
    assert crop_geometry.crop_top_left == (0, 48)


def test_random_flip_mirrors_samples_and_caches_them_apart(make_config, tmp_path):
    mirrored, _, _ = load_image(_wide_sticker(), 32, ImageOptions("pad"), flip=True)
    plain, _, _ = load_image(_wide_sticker(), 32, ImageOptions("pad"))
    assert torch.equal(mirrored, plain.flip(-1))
    cache = tmp_path / "cache"
    flipped = Trainer(
        TrainConfig.from_dict(make_config(random_flip=1.0, latent_cache_dir=str(cache))),
        device="cpu",
    )
    unflipped = Trainer(TrainConfig.from_dict(make_config()), device="cpu")
    a, b = flipped.draw_batch(), unflipped.draw_batch()
    assert a.flipped == [True] * 4 and b.flipped == [False] * 4
    assert a.image_sha256 == b.image_sha256 and not torch.allclose(a.latents, b.latents)
    assert all(p.name.endswith("-flip.safetensors") for p in cache.rglob("*.safetensors"))


def test_caption_dropout_trains_on_the_empty_prompt(make_config):
    dropped = Trainer(TrainConfig.from_dict(make_config(caption_dropout=1.0)), device="cpu")
    kept = Trainer(TrainConfig.from_dict(make_config()), device="cpu")
    a, b = dropped.draw_batch(), kept.draw_batch()
    assert a.captions == [""] * 4 and all(b.captions)
    empty = dropped.family.condition(dropped.pipeline, [""] * 4, a.geometry, dropped.device)
    assert torch.equal(a.conditioning["encoder_hidden_states"], empty["encoder_hidden_states"])
    assert not torch.equal(
        a.conditioning["encoder_hidden_states"], b.conditioning["encoder_hidden_states"]
    )


def _captured_noise(trainer: Trainer) -> torch.Tensor:
    seen = []
    original = trainer.family.noise

    def spy(scheduler, latents, noise, timesteps):
        seen.append(noise)
        return original(scheduler, latents, noise, timesteps)

    trainer.family = type("Spy", (), {})()
    for name in ("condition", "predict", "min_snr_weights"):
        setattr(trainer.family, name, getattr(original.__self__, name))
    trainer.family.noise = spy
    trainer._micro_step(trainer.draw_batch())
    return seen[0]


def test_noise_offset_shifts_each_channel(make_config):
    plain = _captured_noise(Trainer(TrainConfig.from_dict(make_config()), device="cpu"))
    offset = _captured_noise(
        Trainer(TrainConfig.from_dict(make_config(noise_offset=0.9)), device="cpu")
    )
    spread = lambda n: n.mean(dim=(2, 3)).std().item()  # noqa: E731
    assert spread(plain) < 0.2 < spread(offset)


@pytest.mark.parametrize("case", ["sd", "sd-v"])
def test_min_snr_gamma_weights_low_noise_samples_down(make_config, family_bases, case):
    trainer = Trainer(
        TrainConfig.from_dict(
            make_config(base_model=str(family_bases(case)), adapter="lora", min_snr_gamma=5.0)
        ),
        device="cpu",
    )
    batch = trainer.draw_batch()
    batch.timesteps = torch.tensor([0, 50, 500, 999])
    _, weights = trainer._micro_step(batch)
    assert weights[0] < 0.1 and weights[-1] == pytest.approx(1.0 if case == "sd" else 0.0, abs=0.02)
    assert weights[0] < weights[1] < 1  # high SNR (little noise) counts less, clipped at γ


def test_gradient_checkpointing_and_options_reach_the_model_and_lineage(make_config):
    result = run_training(
        make_config(
            adapter="lora",
            steps=1,
            batch_size=2,
            gradient_checkpointing=True,
            caption_dropout=0.25,
            image_fit="pad",
            background_color=[10, 20, 30],
        )
    )
    options = read_lineage(result.checkpoint_path)["training_options"]
    assert options["caption_dropout"] == 0.25 and options["image_fit"] == "pad"
    assert options["background_color"] == [10, 20, 30] and options["gradient_checkpointing"]
    trainer = Trainer(TrainConfig.from_dict(make_config(gradient_checkpointing=True)), device="cpu")
    assert trainer.unwrapped_denoiser().is_gradient_checkpointing
