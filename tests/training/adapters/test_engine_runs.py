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
