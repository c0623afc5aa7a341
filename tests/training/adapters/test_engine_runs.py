"""Each style adapter trains a few steps through the engine's public entry point (`run_training`)
and its checkpoint reloads into a fresh base UNet with identical outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.engine.adapters import get_adapter
from training.engine.base_model import load_base_components
from training.engine.run import run_training
from training.engine.tiny import save_tiny_base_model
from training.engine.toydata import write_toy_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_and_data(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("engine")
    return save_tiny_base_model(root / "base"), write_toy_dataset(root / "data", "style", 4, seed=0)


@pytest.mark.parametrize(
    ("adapter", "params"),
    [
        ("styledrop", {"rank": 2, "style_descriptor": "sticker, thick outline"}),
        ("finestyle", {"rank": 2}),
        ("kv_lora", {"rank": 2}),
        ("styleinject", {"branches": 2, "rank": 2}),
    ],
)
def test_adapter_trains_and_reloads(base_and_data, tmp_path, adapter, params) -> None:
    base, dataset = base_and_data
    result = run_training(
        {
            "recipe": "domain",
            "base_model": str(base),
            "output_dir": str(tmp_path / "run"),
            "datasets": {"domain": dataset},
            "adapter": adapter,
            "adapter_params": params,
            "resolution": 32,
            "batch_size": 2,
            "steps": 2,
            "checkpoint_every": 2,
            "learning_rate": 1e-2,
            "seed": 0,
        },
        device="cpu",
    )
    assert result.status == "completed" and result.step == 2
    assert all(torch.isfinite(torch.tensor(result.losses)))
    folder = Path(result.checkpoint_path) / "adapter"
    assert (folder / "adapter_model.safetensors").is_file()

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        unet = load_base_components(base)["unet"]
        plain = unet(latents, 500, context).sample
        get_adapter(adapter).load(unet, folder)
        tuned = unet(latents, 500, context).sample
        again = load_base_components(base)["unet"]
        get_adapter(adapter).load(again, folder)
        assert torch.equal(again(latents, 500, context).sample, tuned)
    assert not torch.allclose(tuned, plain, atol=1e-6), "training changed nothing"


def _config(base: Path, dataset: dict, out: Path, adapter: str, params: dict, **extra) -> dict:
    return {
        "recipe": "domain",
        "base_model": str(base),
        "output_dir": str(out),
        "datasets": {"domain": dataset},
        "adapter": adapter,
        "adapter_params": params,
        "resolution": 32,
        "batch_size": 2,
        "steps": 2,
        "checkpoint_every": 2,
        "learning_rate": 1e-2,
        "seed": 0,
        **extra,
    }


@pytest.mark.parametrize(
    ("adapter", "params"),
    [("styleinject", {"branches": 2, "rank": 2}), ("styledrop", {"rank": 2})],
)
def test_ema_weights_are_what_inference_loads(base_and_data, tmp_path, adapter, params) -> None:
    """The EMA file names the denoiser's own parameters, so `load_checkpoint_for_inference`
    puts the averaged weights (not the raw ones) into the adapter layers."""
    from safetensors.torch import load_file

    from training.engine.checkpoint import load_checkpoint_for_inference

    base, dataset = base_and_data
    config = _config(base, dataset, tmp_path / "run", adapter, params, use_ema=True, ema_decay=0.5)
    result = run_training(config, device="cpu")
    shadow = load_file(Path(result.checkpoint_path) / "ema" / "ema.safetensors")
    loaded = dict(load_checkpoint_for_inference(result.checkpoint_path)["unet"].named_parameters())
    raw = dict(
        load_checkpoint_for_inference(result.checkpoint_path, use_ema=False)[
            "unet"
        ].named_parameters()
    )
    assert shadow and set(shadow) <= set(loaded)
    for name, tensor in shadow.items():
        assert torch.equal(loaded[name], tensor)
    assert any(not torch.equal(raw[n], shadow[n]) for n in shadow)  # EMA differs from raw


def test_style_descriptor_reaches_training_captions_and_sampling(base_and_data, tmp_path) -> None:
    """A plain `domain` run of StyleDrop appends the descriptor to every caption, and its
    checkpoint samples with it, as the iterative recipe does."""
    from training.engine.config import TrainConfig
    from training.engine.generation import generate
    from training.engine.loop import Trainer

    base, dataset = base_and_data
    descriptor = "in flat sticker style"
    params = {"rank": 2, "style_descriptor": descriptor}
    config = _config(base, dataset, tmp_path / "run", "styledrop", params)
    trainer = Trainer(TrainConfig.from_dict(config), device="cpu")
    captions = trainer.draw_batch().captions
    assert captions and all(c.endswith(f", {descriptor}") for c in captions)
    assert all(c.count(descriptor) == 1 for c in captions)

    result = run_training(config, device="cpu")
    images = generate(
        ["a fox", f"a cat, {descriptor}"],
        [0],
        {"steps": 2, "resolution": 32},
        checkpoint=result.checkpoint_path,
        device="cpu",
    )
    assert [i.metadata["full_prompt"] for i in images] == [
        f"a fox, {descriptor}",
        f"a cat, {descriptor}",
    ]


def test_finestyle_checkpoint_generates_with_lambda_guidance(base_and_data, tmp_path) -> None:
    """`generate` samples a FineStyle checkpoint with its λ1/λ2: λ1 = 0, λ2 = g − 1 is plain
    CFG at scale g; λ1 > 0 draws something else; other adapters refuse the λ settings."""
    import numpy as np

    from training.engine.generation import build_pipeline, generate

    base, dataset = base_and_data
    config = _config(base, dataset, tmp_path / "run", "kv_lora", {"rank": 2})
    result = run_training({**config, "learning_rate": 5e-2}, device="cpu")
    pipeline = build_pipeline(checkpoint=result.checkpoint_path, device="cpu")
    settings = {"steps": 3, "resolution": 32, "guidance_scale": 4.0}

    def draw(**extra: float) -> tuple[np.ndarray, dict]:
        image = generate(["a fox"], [0], {**settings, **extra}, pipeline=pipeline)[0]
        return np.asarray(image.image, dtype=np.int16), image.metadata["guidance"]

    as_cfg, guidance = draw(finestyle_lambda1=0.0, finestyle_lambda2=3.0)
    assert guidance == {"method": "finestyle", "lambda1": 0.0, "lambda2": 3.0}
    styled, _ = draw(finestyle_lambda1=8.0, finestyle_lambda2=3.0)
    _, defaults = draw()
    assert defaults == {"method": "finestyle", "lambda1": 1.0, "lambda2": 5.0}  # the adapter's
    pipeline.engine_source["adapter"] = "lora"  # the same weights sampled as a plain checkpoint
    plain, plain_guidance = draw()
    assert plain_guidance == {"method": "cfg", "guidance_scale": 4.0}
    assert np.abs(as_cfg - plain).max() <= 2
    assert np.abs(styled - plain).max() > 2
    with pytest.raises(ValueError, match="sampler.finestyle_lambda1: .*not FineStyle"):
        draw(finestyle_lambda1=1.0)


def test_any_adapter_seeds_a_run_of_the_same_kind(base_and_data, tmp_path) -> None:
    """`init_from` starts a run from a checkpoint's adapter (StyleInject, which no base folder
    can hold, included); another adapter kind or base model is refused naming the field."""
    from training.engine.config import ConfigError, TrainConfig
    from training.engine.loop import Trainer

    base, dataset = base_and_data
    params = {"branches": 2, "rank": 2}
    first = run_training(
        _config(base, dataset, tmp_path / "first", "styleinject", params), device="cpu"
    )
    seeded = _config(
        base, dataset, tmp_path / "next", "styleinject", params, init_from=first.checkpoint_path
    )
    trainer = Trainer(TrainConfig.from_dict(seeded), device="cpu")
    from safetensors.torch import load_file

    saved = load_file(Path(first.checkpoint_path) / "adapter" / "adapter_model.safetensors")
    current = dict(trainer.unwrapped_denoiser().named_parameters())
    assert saved and all(torch.equal(current[k], v) for k, v in saved.items())
    assert trainer.step == 0
    result = trainer.run()
    assert result.status == "completed"
    from training.engine.checkpoint import read_lineage

    assert read_lineage(result.checkpoint_path)["initialized_from"] == first.checkpoint_path

    other = {**seeded, "adapter": "styledrop", "adapter_params": {"rank": 2}}
    with pytest.raises(ConfigError, match="holds a 'styleinject' adapter") as error:
        Trainer(TrainConfig.from_dict(other), device="cpu")
    assert error.value.field == "init_from"


def test_style_and_content_adapters_sample_together(base_and_data, tmp_path) -> None:
    """StyleDrop's composition: style weight 1 is the style checkpoint alone, 0 the content
    checkpoint alone, 0.5 neither; a content checkpoint of another base model is refused."""
    import numpy as np

    from training.engine.generation import generate

    base, dataset = base_and_data
    style = run_training(
        _config(base, dataset, tmp_path / "style", "styledrop", {"rank": 2}, learning_rate=5e-2),
        device="cpu",
    )
    content = run_training(
        _config(
            base, dataset, tmp_path / "content", "lora", {"rank": 2}, seed=1, learning_rate=5e-2
        ),
        device="cpu",
    )
    settings = {"steps": 3, "resolution": 32}

    def draw(checkpoint: str, **extra) -> np.ndarray:
        item = generate(["a fox"], [0], settings, checkpoint=checkpoint, device="cpu", **extra)[0]
        if "content_checkpoint" in extra:
            assert item.metadata["composition"] == {
                "content_checkpoint": content.checkpoint_path,
                "style_weight": extra["style_weight"],
            }
        return np.asarray(item.image, dtype=np.int16)

    alone_style, alone_content = draw(style.checkpoint_path), draw(content.checkpoint_path)
    both = dict(content_checkpoint=content.checkpoint_path)
    assert np.abs(draw(style.checkpoint_path, style_weight=1.0, **both) - alone_style).max() <= 2
    assert np.abs(draw(style.checkpoint_path, style_weight=0.0, **both) - alone_content).max() <= 2
    mixed = draw(style.checkpoint_path, style_weight=0.5, **both)
    assert np.abs(mixed - alone_style).max() > 2 and np.abs(mixed - alone_content).max() > 2

    elsewhere = save_tiny_base_model(tmp_path / "other-base", seed=3)
    foreign = run_training(
        _config(elsewhere, dataset, tmp_path / "foreign", "lora", {"rank": 2}), device="cpu"
    )
    with pytest.raises(ValueError, match="content_checkpoint: .*same base model"):
        draw(style.checkpoint_path, style_weight=0.5, content_checkpoint=foreign.checkpoint_path)
