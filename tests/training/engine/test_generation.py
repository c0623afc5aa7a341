import numpy as np
import pytest

from training.engine.generation import SamplerSettings, build_pipeline, generate
from training.engine.run import run_training


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory, tiny_base, toy_datasets):
    config = {
        "recipe": "domain",
        "base_model": str(tiny_base),
        "output_dir": str(tmp_path_factory.mktemp("gen") / "run"),
        "datasets": toy_datasets,
        "adapter": "lora",
        "resolution": 32,
        "batch_size": 2,
        "steps": 2,
        "learning_rate": 5e-2,
    }
    return run_training(config, device="cpu").checkpoint_path


def test_checkpoint_generates_deterministic_images_with_metadata(lora_checkpoint, tiny_base):
    pipeline = build_pipeline(checkpoint=lora_checkpoint, device="cpu")
    settings = SamplerSettings(
        steps=3, resolution=32, guidance_scale=4.0, negative_prompt="blurry", style_suffix="sticker"
    )
    images = generate(
        ["a red circle", "a blue square"], [0, 1], settings, pipeline=pipeline, batch_size=3
    )
    assert [(g.prompt, g.seed) for g in images] == [
        ("a red circle", 0),
        ("a red circle", 1),
        ("a blue square", 0),
        ("a blue square", 1),
    ]
    assert all(g.image.size == (32, 32) and g.image.mode == "RGB" for g in images)
    meta = images[0].metadata
    assert (
        meta["full_prompt"] == "a red circle, sticker"
        and meta["sampler"]["negative_prompt"] == "blurry"
    )
    assert meta["checkpoint"] == str(lora_checkpoint) and meta["adapter"] == "lora"
    assert len({g.metadata["sha256"] for g in images}) == 4
    alone = generate(["a blue square"], [1], settings, pipeline=pipeline, batch_size=1)[0]
    assert np.abs(np.asarray(alone.image, int) - np.asarray(images[3].image, int)).max() <= 1
    again = generate(["a blue square"], [1], settings, pipeline=pipeline, batch_size=1)[0]
    assert again.metadata["sha256"] == alone.metadata["sha256"]
    base = generate(
        ["a blue square"], [1], settings, base_model=tiny_base, device="cpu", batch_size=1
    )[0]
    assert base.metadata["sha256"] != alone.metadata["sha256"]  # the adapter changed the model


def test_bad_sampler_settings_name_the_field():
    with pytest.raises(ValueError, match="sampler.scheduler"):
        SamplerSettings.from_dict({"scheduler": "magic"})
    with pytest.raises(ValueError, match="sampler.stepz"):
        SamplerSettings.from_dict({"stepz": 3})
