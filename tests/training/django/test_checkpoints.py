"""Base model registration, and merging a trained checkpoint into a base model folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from training.services.checkpoints import (
    BaseModelRefused,
    materialize_base_model,
    register_base_model,
    seed_for_run,
)


@pytest.mark.django_db
def test_register_base_model_checks_the_folder(tiny_base, tmp_path):
    again = register_base_model(tiny_base.path, "copy-of-tiny")
    assert again.path == tiny_base.path and again.adapter == ""
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelRefused, match="missing model_index.json"):
        register_base_model(tmp_path / "empty", "empty")
    import torch

    save_file({"lora.down.weight": torch.zeros(2, 2)}, tmp_path / "lora.safetensors")
    with pytest.raises(BaseModelRefused, match="not a single-file Stable Diffusion checkpoint"):
        register_base_model(tmp_path / "lora.safetensors", "lora")
    with pytest.raises(BaseModelRefused, match="no such file"):
        register_base_model(tmp_path / "missing", "missing")


@pytest.mark.django_db
@pytest.mark.parametrize("adapter", ["lora", "styledrop"])
def test_lora_kind_checkpoint_merges_into_an_equivalent_base_model(
    versions, tiny_base, data_lead, adapter
):
    from training.engine.generation import generate
    from training.models import Checkpoint
    from training.services.demo_training import run_job_inline
    from training.services.runs.inputs import create_training_run

    run = create_training_run(
        recipe="domain",
        dataset_versions=[versions["domain"]],
        base_checkpoint=tiny_base,
        adapter=adapter,
        hyperparameters={"steps": 3, "learning_rate": 0.05},  # large, so the LoRA shows
    )
    job = run_job_inline("train", {"run_id": run.pk}, user=data_lead, target=run)
    checkpoint = Checkpoint.objects.get(pk=job.result["checkpoint"])
    merged = materialize_base_model(checkpoint)
    assert (merged / "unet").is_dir() and materialize_base_model(checkpoint) == merged
    settings = {"steps": 2, "resolution": 32}
    with_adapter = generate(["a cat"], [0], settings, checkpoint=checkpoint.path, device="cpu")
    from_merged = generate(["a cat"], [0], settings, base_model=str(merged), device="cpu")
    a = np.asarray(with_adapter[0].image, dtype=np.int16)
    b = np.asarray(from_merged[0].image, dtype=np.int16)
    base = generate(["a cat"], [0], settings, base_model=checkpoint.parent.path, device="cpu")
    c = np.asarray(base[0].image, dtype=np.int16)
    assert np.abs(a - c).max() > 20  # the LoRA changed the model...
    assert np.abs(a - b).max() <= 2  # ...and the merged folder reproduces it

    assert seed_for_run(checkpoint, "styleinject") == (merged, None)  # any run starts on it

    # StyleInject's update depends on the input: no base folder holds it, so its checkpoint
    # seeds a StyleInject run that continues its adapter on the checkpoint's own base model.
    checkpoint.adapter = "styleinject"
    with pytest.raises(BaseModelRefused, match="cannot be merged"):
        materialize_base_model(checkpoint)
    base_model, init_from = seed_for_run(checkpoint, "styleinject")
    assert (base_model, init_from) == (Path(tiny_base.path), checkpoint.path)
    with pytest.raises(BaseModelRefused, match="seeds only a 'styleinject' run"):
        seed_for_run(checkpoint, "lora")
