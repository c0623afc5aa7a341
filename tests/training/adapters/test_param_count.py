"""Trainable fractions on an SD1.5-sized UNet, counted on the meta device."""

from __future__ import annotations

import pytest
import torch

from training.engine import param_count

SD15_UNET_PARAMETERS = 859_520_964  # runwayml/stable-diffusion-v1-5 unet


@pytest.fixture(scope="module")
def reports() -> dict[str, param_count.ParamReport]:
    return {r.method: r for r in param_count.report()}


def test_sd15_unet_is_described_not_allocated() -> None:
    unet = param_count.meta_unet()
    assert param_count.count_parameters(unet) == SD15_UNET_PARAMETERS
    assert {p.device for p in unet.parameters()} == {torch.device("meta")}


def test_styledrop_and_styleinject_train_under_one_percent(reports) -> None:
    assert reports["full"].fraction == 1.0
    assert reports["styledrop"].fraction < 0.01
    assert reports["styleinject"].fraction < 0.01
    assert reports["finestyle"].fraction < reports["styledrop"].fraction  # K/V is a subset
    # the paper's largest setting that keeps StyleInject under 1% (n=4, r=32)
    assert (
        param_count.trainable_fraction("styleinject", {"branches": 4, "rank": 32}).fraction < 0.01
    )


def test_finestyle_count_matches_the_lora_formula() -> None:
    """rank x (in + out) for A and B of every attn2.to_k and attn2.to_v."""
    unet = param_count.meta_unet()
    expected = sum(
        4 * (module.in_features + module.out_features)
        for name, module in unet.named_modules()
        if name.endswith(("attn2.to_k", "attn2.to_v"))
    )
    assert param_count.trainable_fraction("finestyle", {"rank": 4}).trainable == expected == 198_144


def test_table_lists_every_method(reports) -> None:
    table = param_count.markdown_table(list(reports.values()))
    for method in ("full", "lora", "styledrop", "finestyle", "styleinject"):
        assert f"| {method} |" in table
