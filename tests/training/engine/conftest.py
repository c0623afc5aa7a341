"""Shared tiny base model and toy datasets: built once per session, read-only for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import training.engine  # noqa: F401


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.engine.tiny import save_tiny_base_model

    return save_tiny_base_model(tmp_path_factory.mktemp("tiny") / "base", seed=0)


@pytest.fixture(scope="session")
def toy_datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    from training.engine.toydata import write_toy_dataset

    root = tmp_path_factory.mktemp("toy")
    return {
        role: write_toy_dataset(root, role, 8, seed=index)
        for index, role in enumerate(("domain", "alignment", "style"))
    }


@pytest.fixture
def make_config(tiny_base: Path, toy_datasets: dict, tmp_path: Path):
    def build(**overrides: Any) -> dict[str, Any]:
        config = {
            "recipe": "domain",
            "base_model": str(tiny_base),
            "output_dir": str(tmp_path / "run"),
            "datasets": toy_datasets,
            "adapter": "full",
            "resolution": 32,
            "batch_size": 4,
            "steps": 4,
            "checkpoint_every": 100,
            "learning_rate": 1e-3,
            "t_s": 400,
        }
        config.update(overrides)
        return config

    return build


# Every family the engine trains, as tiny random folders: SD 1.x (epsilon), SD 2.x-style
# v-prediction, SDXL (two text encoders, text_time) and SD3-layout flow matching.
FAMILY_CASES = {
    "sd": ("sd", "epsilon"),
    "sd-v": ("sd", "v_prediction"),
    "sdxl": ("sdxl", "epsilon"),
    "sd3": ("sd3", "epsilon"),
}


@pytest.fixture(scope="session")
def family_bases(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path):
    """case -> tiny base folder, each written on first use."""
    from training.engine.tiny import save_tiny_base_model

    built: dict[str, Path] = {"sd": tiny_base}

    def get(case: str) -> Path:
        if case not in built:
            family, prediction = FAMILY_CASES[case]
            folder = tmp_path_factory.mktemp(f"tiny-{case}") / "base"
            built[case] = save_tiny_base_model(
                folder, seed=0, family=family, prediction_type=prediction
            )
        return built[case]

    return get
