"""Tiny models shared by the adapter tests: one build per session, a fresh UNet copy per test."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_components() -> dict[str, Any]:
    from training.engine.tiny import build_tiny_components

    return build_tiny_components(seed=0)


@pytest.fixture
def unet(tiny_components: dict[str, Any]) -> Any:
    """A private copy: adapters mutate the UNet they are applied to."""
    return copy.deepcopy(tiny_components["unet"])


@pytest.fixture
def fresh_unet(tiny_components: dict[str, Any]):
    """A factory of further pristine copies (the 'fresh base model' a checkpoint loads into)."""
    return lambda: copy.deepcopy(tiny_components["unet"])


@pytest.fixture(scope="session")
def unet_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 16, 16, generator=generator)
    timestep = torch.tensor(500)
    context = torch.randn(1, 77, 32, generator=generator)
    return latents, timestep, context


@pytest.fixture(scope="session")
def clip_bundle() -> Any:
    from training.engine.metrics import load_metric_clip

    return load_metric_clip("tiny-clip", None, seed=0)
