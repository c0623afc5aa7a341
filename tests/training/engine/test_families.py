"""Every model family through the same engine: detection, Style Tailoring's per-sample windows,
exact resume after a kill, generation, lineage, and refusals naming the part at fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from training.engine.base_model import BaseModelError, load_base_components
from training.engine.checkpoint import load_checkpoint_for_inference, read_lineage
from training.engine.config import TrainConfig
from training.engine.families import inspect_model_folder
from training.engine.generation import SamplerSettings, build_pipeline, generate
from training.engine.loop import Trainer
from training.engine.run import run_training

from .conftest import FAMILY_CASES

CASES = list(FAMILY_CASES)


def _sampler(case: str) -> SamplerSettings:
    scheduler = "flow_euler" if case == "sd3" else "ddim"
    return SamplerSettings(scheduler=scheduler, steps=2, resolution=32, guidance_scale=2.0)


@pytest.mark.parametrize("case", CASES)
def test_family_is_detected_from_model_index(family_bases, case):
    folder = inspect_model_folder(family_bases(case))
    family, prediction = FAMILY_CASES[case]
    assert folder.family == family and folder.variant is None and folder.size_bytes > 100_000
    components = load_base_components(folder.path)
    assert components["family"].name == family
    assert components["family"].prediction_type(components["noise_scheduler"]) == (
        "flow_matching" if family == "sd3" else prediction
    )


@pytest.mark.parametrize("case", CASES)
def test_style_tailoring_draws_each_set_from_its_window_on_every_family(
    make_config, family_bases, case
):
    config = TrainConfig.from_dict(
        make_config(
            base_model=str(family_bases(case)),
            recipe="style_tailoring",
            t_s=300,
            mix_ratio=0.5,
            batch_size=4,
            adapter="lora",
        )
    )
    trainer = Trainer(config, device="cpu")
    style = {row.image_sha256 for row in trainer.datasets["style"].rows}
    for micro in range(6):
        batch = trainer.draw_batch(step=micro, micro_step=micro)
        for role, t, sha in zip(
            batch.roles, batch.timesteps.tolist(), batch.image_sha256, strict=True
        ):
            if role == "style":
                assert 0 <= t < 300 and sha in style
            else:
                assert 300 <= t < 1000 and sha not in style
        noisy, model_t, target = trainer.family.noise(
            trainer.noise_scheduler, batch.latents, torch.randn_like(batch.latents), batch.timesteps
        )
        if case == "sd3":  # t_s on the sigma axis: sigma = t / T, content on the noisy side
            sigma = model_t / 1000
            assert all(
                (s >= 0.3) == (r == "alignment")
                for s, r in zip(sigma.tolist(), batch.roles, strict=True)
            )
        assert noisy.shape == target.shape == batch.latents.shape
    if case == "sdxl":
        time_ids = batch.conditioning["added_cond_kwargs"]["time_ids"]
        assert time_ids.shape == (4, 6)
        assert time_ids[:, 4:].tolist() == [[32.0, 32.0]] * 4  # target size
        assert [tuple(g.original_size) for g in batch.geometry] == [
            tuple(int(v) for v in row) for row in time_ids[:, :2].tolist()
        ]


class Killed(Exception):
    pass


@pytest.mark.parametrize("case", ["sdxl", "sd3", "sd-v"])
def test_family_run_resumes_exactly_after_a_kill_and_generates(
    make_config, family_bases, tmp_path, case
):
    options = {
        "base_model": str(family_bases(case)),
        "recipe": "style_tailoring",
        "adapter": "lora",
        "adapter_params": {"rank": 2},
        "steps": 4,
        "checkpoint_every": 2,
        "batch_size": 2,
        "learning_rate": 1e-2,
        "use_ema": True,
        "ema_decay": 0.5,
    }
    straight = run_training(make_config(output_dir=str(tmp_path / "straight"), **options))

    def die_at_3(step, total, loss):
        if step == 3:
            raise Killed

    broken = make_config(output_dir=str(tmp_path / "broken"), **options)
    with pytest.raises(Killed):
        run_training(broken, progress=die_at_3)
    resumed = run_training(broken, resume_from="latest")
    assert resumed.losses == straight.losses
    lineage = read_lineage(resumed.checkpoint_path)
    assert lineage["family"]["name"] == FAMILY_CASES[case][0]

    settings = _sampler(case)
    trained = generate(
        ["a red circle"], [0], settings, checkpoint=resumed.checkpoint_path, device="cpu"
    )
    base = generate(["a red circle"], [0], settings, base_model=options["base_model"], device="cpu")
    again = generate(
        ["a red circle"], [0], settings, checkpoint=straight.checkpoint_path, device="cpu"
    )
    assert trained[0].image.size == (32, 32)
    assert trained[0].metadata["family"] == FAMILY_CASES[case][0]
    assert trained[0].metadata["sha256"] == again[0].metadata["sha256"]
    assert trained[0].metadata["sha256"] != base[0].metadata["sha256"]


def test_checkpoint_of_another_family_is_refused(make_config, family_bases, tmp_path):
    result = run_training(
        make_config(base_model=str(family_bases("sd3")), adapter="lora", steps=1, batch_size=1)
    )
    with pytest.raises(
        BaseModelError, match=r"base_model: .* is a sd model, but checkpoint .* sd3"
    ):
        load_checkpoint_for_inference(result.checkpoint_path, base_model=family_bases("sd"))


def test_flow_family_refuses_a_ddpm_sampler(family_bases):
    pipeline = build_pipeline(base_model=family_bases("sd3"), device="cpu")
    with pytest.raises(ValueError, match="sampler.scheduler: 'ddim' does not sample the sd3"):
        generate(["x"], [0], SamplerSettings(steps=1, resolution=32), pipeline=pipeline)


def _copy(base: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(base, target)
    return target


def test_broken_and_unknown_folders_are_refused_naming_the_part(family_bases, tmp_path):
    folder = _copy(family_bases("sdxl"), tmp_path)
    shutil.rmtree(folder / "text_encoder_2")
    with pytest.raises(BaseModelError, match=r"missing folder text_encoder_2/"):
        inspect_model_folder(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "KandinskyPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(BaseModelError, match="_class_name 'KandinskyPipeline' is not a family"):
        inspect_model_folder(folder)
    (folder / "model_index.json").unlink()
    with pytest.raises(BaseModelError, match="missing model_index.json"):
        inspect_model_folder(folder)
    other = _copy(family_bases("sd"), tmp_path / "b")
    for file in (other / "unet").glob("*.safetensors"):
        file.unlink()
    with pytest.raises(BaseModelError, match=r"unet: no weights"):
        inspect_model_folder(other)


def test_fp16_variant_folder_is_detected_and_loads(family_bases, tmp_path):
    folder = _copy(family_bases("sd"), tmp_path)
    from safetensors.torch import load_file, save_file

    for file in folder.glob("*/*.safetensors"):
        half = {k: v.half() if v.is_floating_point() else v for k, v in load_file(file).items()}
        save_file(half, file.with_name(file.name.replace(".safetensors", ".fp16.safetensors")))
        file.unlink()
    found = inspect_model_folder(folder)
    assert found.variant == "fp16"
    components = load_base_components(folder)
    assert components["unet"].dtype == torch.float32
