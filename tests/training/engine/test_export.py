"""Exports load in a plain diffusers pipeline and draw what the engine draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.engine.export import (
    ExportError,
    LoraLoadError,
    export_checkpoint,
    load_lora_checked,
)
from training.engine.families import get_family
from training.engine.generation import SamplerSettings, generate
from training.engine.run import run_training

# Two images from the same weights and noise differ only by float rounding of the LoRA
# (fused in the engine's peft layers vs loaded by diffusers): at most a couple of 8-bit levels.
MAX_PIXEL_DIFFERENCE = 2


def _plain_pipeline(base: Path, family: str):
    """The family's pipeline as a diffusers user loads it, not through the engine."""
    absent = {
        "sd": {"safety_checker": None, "requires_safety_checker": False},
        "sdxl": {},
        "sd3": dict.fromkeys(
            ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")
        ),
    }[family]
    cls = get_family(family).pipeline_type()
    return cls.from_pretrained(str(base), local_files_only=True, **absent)


def _pixels(images) -> np.ndarray:
    return np.asarray(images[0].image, dtype=np.int16)


@pytest.mark.parametrize(
    ("case", "fmt"),
    [
        ("sd", "diffusers"),
        ("sd", "kohya"),
        ("sdxl", "diffusers"),
        ("sdxl", "kohya"),
        ("sd3", "diffusers"),
    ],
)
def test_lora_export_loads_in_plain_diffusers_and_draws_the_same(
    make_config, family_bases, tmp_path, case, fmt
):
    base = family_bases(case)
    result = run_training(
        make_config(
            base_model=str(base),
            adapter="lora",
            adapter_params={"rank": 2, "alpha": 4},
            steps=2,
            batch_size=2,
            learning_rate=5e-2,
            use_ema=True,
            ema_decay=0.5,
        )
    )
    exported = export_checkpoint(result.checkpoint_path, fmt, tmp_path / "export")
    assert exported.is_file()
    settings = SamplerSettings(
        scheduler="flow_euler" if case == "sd3" else "ddim",
        steps=2,
        resolution=32,
        guidance_scale=2.0,
    )
    engine = generate(
        ["a blue star"], [3], settings, checkpoint=result.checkpoint_path, device="cpu"
    )
    plain = _plain_pipeline(base, case)
    untouched = generate(["a blue star"], [3], settings, pipeline=plain)
    layers = load_lora_checked(plain, exported)
    assert layers > 0
    loaded = generate(["a blue star"], [3], settings, pipeline=plain)
    assert np.abs(_pixels(loaded) - _pixels(engine)).max() <= MAX_PIXEL_DIFFERENCE
    assert np.abs(_pixels(untouched) - _pixels(engine)).max() > 10 * MAX_PIXEL_DIFFERENCE


def test_a_file_without_lora_keys_for_the_model_is_refused(make_config, family_bases, tmp_path):
    result = run_training(make_config(adapter="lora", steps=1, batch_size=1))
    raw = Path(result.checkpoint_path) / "adapter" / "adapter_model.safetensors"  # bare peft keys
    with pytest.raises(LoraLoadError, match="no LoRA keys reached"):
        load_lora_checked(_plain_pipeline(family_bases("sd"), "sd"), raw)


def test_exports_a_format_cannot_hold_are_refused(make_config, family_bases, tmp_path):
    sd3 = run_training(
        make_config(base_model=str(family_bases("sd3")), adapter="lora", steps=1, batch_size=1)
    )
    with pytest.raises(ExportError, match="format 'kohya': the sd3 family's transformer"):
        export_checkpoint(sd3.checkpoint_path, "kohya", tmp_path / "k")
    full = run_training(
        make_config(adapter="full", steps=1, batch_size=1, output_dir=str(tmp_path / "f"))
    )
    with pytest.raises(ExportError, match="a full checkpoint exports as a diffusers folder"):
        export_checkpoint(full.checkpoint_path, "kohya", tmp_path / "k")
    folder = export_checkpoint(full.checkpoint_path, "diffusers", tmp_path / "merged")
    assert (folder / "model_index.json").is_file() and (folder / "unet").is_dir()
    settings = SamplerSettings(steps=2, resolution=32)
    engine = generate(["x"], [0], settings, checkpoint=full.checkpoint_path, device="cpu")
    again = generate(["x"], [0], settings, base_model=folder, device="cpu")
    assert engine[0].metadata["sha256"] == again[0].metadata["sha256"]
