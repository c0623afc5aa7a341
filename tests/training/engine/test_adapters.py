import pytest
import torch

from training.engine.adapters import (
    ADAPTERS,
    Adapter,
    available_adapters,
    get_adapter,
    register_adapter,
)
from training.engine.tiny import build_tiny_components


def _unet_output(unet):
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 16, 16, generator=generator)
    hidden = torch.randn(2, 77, 32, generator=generator)
    with torch.no_grad():
        return unet(sample, torch.tensor([10, 700]), hidden).sample


def test_registry_has_builtins_and_accepts_new_adapters():
    assert {"full", "lora"} <= set(available_adapters())
    custom = Adapter(
        "test_only", apply=lambda u, p: [], save=lambda u, d: None, load=lambda u, d: None
    )
    register_adapter(custom)
    try:
        assert get_adapter("test_only") is custom
    finally:
        ADAPTERS.pop("test_only")
    with pytest.raises(KeyError, match="'missing' is not registered"):
        get_adapter("missing")


def test_lora_trains_only_its_layers_and_reloads_exactly(tmp_path):
    lora = get_adapter("lora")
    unet = build_tiny_components(0)["unet"]
    trainable = lora.apply(unet, {"rank": 2, "target_modules": ["to_q", "to_v"]})
    assert trainable and all(p.requires_grad for p in trainable)
    assert sum(p.requires_grad for p in unet.parameters()) == len(trainable)
    with torch.no_grad():
        for parameter in trainable:
            parameter.add_(torch.randn_like(parameter) * 0.1)
    expected = _unet_output(unet)
    lora.save(unet, tmp_path)
    fresh = build_tiny_components(0)["unet"]
    assert not torch.equal(_unet_output(fresh), expected)
    lora.load(fresh, tmp_path)
    assert torch.equal(_unet_output(fresh), expected)


def test_lora_rejects_unknown_params():
    with pytest.raises(ValueError, match="adapter_params.rnak"):
        get_adapter("lora").apply(build_tiny_components(0)["unet"], {"rnak": 4})


def test_full_adapter_reloads_exactly(tmp_path):
    full = get_adapter("full")
    unet = build_tiny_components(0)["unet"]
    trainable = full.apply(unet, {})
    assert len(trainable) == len(list(unet.parameters()))
    with torch.no_grad():
        trainable[0].add_(1.0)
    expected = _unet_output(unet)
    full.save(unet, tmp_path)
    fresh = build_tiny_components(0)["unet"]
    full.load(fresh, tmp_path)
    assert torch.equal(_unet_output(fresh), expected)
