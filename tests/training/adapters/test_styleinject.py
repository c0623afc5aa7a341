"""StyleInject's math: shapes, the router, the variance injection, and save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.engine.adapters import get_adapter, styleinject
from training.engine.adapters.styleinject import StyleInjectLinear
from training.engine.config import ConfigError


def _layer(branches: int = 3, rank: int = 2, inject: bool = True) -> StyleInjectLinear:
    torch.manual_seed(0)
    layer = StyleInjectLinear(nn.Linear(16, 24), branches, rank, inject_variance=inject)
    # Trained-looking values: the zero inits would make every check below trivially true.
    nn.init.normal_(layer.up, std=0.5)
    nn.init.normal_(layer.router.weight, std=1.0)
    nn.init.normal_(layer.router.bias, std=1.0)
    return layer


def test_shapes_follow_branches_and_rank() -> None:
    layer = _layer(branches=5, rank=3)
    x = torch.randn(4, 7, 16)
    assert layer.down.shape == (5, 3, 16)
    assert layer.up.shape == (24, 3)
    assert layer.router_weights(x).shape == (4, 5)
    assert layer.style_features(x).shape == (4, 7, 24)
    assert layer(x).shape == (4, 7, 24)
    assert layer(torch.randn(4, 16)).shape == (4, 24)


def test_router_weights_are_a_distribution_per_input() -> None:
    layer = _layer(branches=4)
    x = torch.randn(6, 9, 16) * 3
    weights = layer.router_weights(x)
    assert torch.allclose(weights.sum(-1), torch.ones(6), atol=1e-6)
    assert (weights >= 0).all()
    # per input: different inputs are routed differently
    assert not torch.allclose(weights[0], weights[1], atol=1e-3)


def test_style_features_mix_branches_by_router_weights() -> None:
    layer = _layer(branches=3, rank=2)
    x = torch.randn(2, 5, 16)
    p = layer.router_weights(x)
    expected = torch.zeros(2, 5, 24)
    for i in range(3):
        expected += p[:, i, None, None] * (x @ layer.down[i].T @ layer.up.T)
    assert torch.allclose(layer.style_features(x), layer.scale * expected, atol=1e-5)


def test_variance_injection_keeps_channel_means_and_moves_the_spread() -> None:
    layer = _layer()
    x = torch.randn(3, 50, 16)
    hidden = layer.base(x)
    out = layer(x)
    mu, sigma = hidden.mean(1), hidden.std(1, unbiased=False)
    delta_sigma = layer.style_features(x).mean(1)
    # mean per input and channel is exactly what the frozen layer produced
    assert torch.allclose(out.mean(1), mu, atol=1e-5)
    # spread is sigma + delta_sigma (up to eps): the injected variance
    assert torch.allclose(out.std(1, unbiased=False), (sigma + delta_sigma).abs(), atol=1e-3)
    # and the normalised pattern is unchanged (only rescaled): AdaIN, not an additive update
    normalised = (hidden - mu[:, None]) / sigma[:, None]
    rebuilt = mu[:, None] + (sigma + delta_sigma)[:, None] * normalised
    assert torch.allclose(out, rebuilt, atol=1e-4)
    assert delta_sigma.abs().max() > 1e-2  # the check above is not vacuous


def test_additive_targets_add_the_style_features() -> None:
    layer = _layer(inject=False)
    x = torch.randn(2, 5, 16)
    assert torch.allclose(layer(x), layer.base(x) + layer.style_features(x), atol=1e-6)


def test_fresh_layer_is_the_identity() -> None:
    base = nn.Linear(16, 24)
    layer = StyleInjectLinear(base, 4, 2)
    x = torch.randn(2, 10, 16)
    assert torch.equal(layer(x), base(x))


def test_apply_wraps_queries_and_values_and_trains_only_the_adapter(unet, unet_inputs) -> None:
    latents, t, context = unet_inputs
    before = unet(latents, t, context).sample
    trainable = styleinject.apply(unet, {"branches": 3, "rank": 2})
    layers = styleinject.wrapped_layers(unet)
    assert layers and all(n.endswith(("to_q", "to_v")) for n in layers)
    assert {layer.inject_variance for n, layer in layers.items() if n.endswith("to_q")} == {True}
    assert {layer.inject_variance for n, layer in layers.items() if n.endswith("to_v")} == {False}
    trainable_ids = {id(p) for p in trainable}
    assert {id(p) for p in unet.parameters() if p.requires_grad} == trainable_ids
    per_layer = [
        3 * 2 * layer.base.in_features
        + layer.base.out_features * 2
        + 3 * layer.base.in_features
        + 3
        for layer in layers.values()
    ]
    assert sum(p.numel() for p in trainable) == sum(per_layer)
    assert torch.equal(unet(latents, t, context).sample, before)  # zero-initialised up-projection


def test_gradients_reach_every_adapter_tensor(unet, unet_inputs) -> None:
    latents, t, context = unet_inputs
    trainable = styleinject.apply(unet, {"branches": 2, "rank": 2})
    with torch.no_grad():
        for layer in styleinject.wrapped_layers(unet).values():
            layer.up.normal_(std=0.1)
    unet(latents, t, context).sample.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


def test_save_load_round_trip_is_exact(unet, fresh_unet, unet_inputs, tmp_path) -> None:
    latents, t, context = unet_inputs
    trainable = styleinject.apply(unet, {"branches": 3, "rank": 2, "alpha": 4})
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in trainable:
            parameter.normal_(std=0.2)
    expected = unet(latents, t, context).sample
    styleinject.save(unet, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert sum(v.numel() for v in saved.values()) == sum(p.numel() for p in trainable)

    restored = fresh_unet()
    get_adapter("styleinject").load(restored, tmp_path)
    assert torch.equal(restored(latents, t, context).sample, expected)


def test_load_refuses_another_adapter_directory(unet, tmp_path) -> None:
    (tmp_path / "adapter_config.json").write_text('{"adapter": "finestyle"}')
    with pytest.raises(ValueError, match="finestyle"):
        styleinject.load(unet, tmp_path)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"branches": 0}, "adapter_params.branches"),
        ({"rank": "4"}, "adapter_params.rank"),
        ({"ranks": 4}, "adapter_params.ranks"),
        ({"inject_targets": "nothing", "additive_targets": None}, "adapter_params.inject_targets"),
    ],
)
def test_bad_params_name_the_field(unet, params, field) -> None:
    with pytest.raises(ConfigError) as error:
        styleinject.apply(unet, params)
    assert error.value.field == field
