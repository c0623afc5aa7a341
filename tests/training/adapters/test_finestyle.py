"""FineStyle: adapters on cross-attention K/V only, exact save/load, and the λ1/λ2 guidance."""

from __future__ import annotations

import pytest
import torch

from training.engine.adapters import finestyle, get_adapter
from training.engine.config import ConfigError


def test_only_cross_attention_keys_and_values_train(unet, unet_inputs) -> None:
    trainable = finestyle.apply(unet, {"rank": 2})
    names = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert names, "FineStyle trained nothing"
    assert all(".attn2.to_k." in n or ".attn2.to_v." in n for n in names)
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in names} == {"to_k", "to_v"}
    assert all("lora_A" in n or "lora_B" in n for n in names)
    cross_attention_layers = [n for n, _ in unet.named_modules() if n.endswith("attn2")]
    assert len(names) == 4 * len(cross_attention_layers)  # A and B for K and V of each
    assert {id(p) for p in trainable} == {id(p) for p in unet.parameters() if p.requires_grad}

    latents, t, context = unet_inputs
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    unet(latents, t, context).sample.square().mean().backward()
    touched = {n for n, p in unet.named_parameters() if p.grad is not None}
    assert touched == set(names)


def test_kv_lora_is_the_design_name_of_finestyle(unet, fresh_unet, unet_inputs, tmp_path) -> None:
    from training.engine.config import TrainConfig

    config = TrainConfig(
        recipe="domain",
        base_model="base",
        output_dir="out",
        datasets={},
        adapter="kv_lora",
        adapter_params={"rank": 2},
    )
    adapter = get_adapter(config.adapter)
    adapter.apply(unet, config.adapter_params)
    names = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert names and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in names)

    latents, t, context = unet_inputs
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    expected = unet(latents, t, context).sample
    adapter.save(unet, tmp_path)
    restored = fresh_unet()
    get_adapter("finestyle").load(restored, tmp_path)  # either name reads the other's files
    assert torch.equal(restored(latents, t, context).sample, expected)


def test_target_modules_cannot_be_widened(unet) -> None:
    with pytest.raises(ConfigError) as error:
        finestyle.apply(unet, {"target_modules": r".*to_q"})
    assert error.value.field == "adapter_params.target_modules"


def test_save_load_round_trip_is_exact(unet, fresh_unet, unet_inputs, tmp_path) -> None:
    latents, t, context = unet_inputs
    finestyle.apply(unet, {"rank": 3, "alpha": 6})
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    expected = unet(latents, t, context).sample
    finestyle.save(unet, tmp_path)
    restored = fresh_unet()
    get_adapter("finestyle").load(restored, tmp_path)
    assert torch.equal(restored(latents, t, context).sample, expected)
    assert finestyle.adapter_params(restored)["rank"] == 3


def test_guidance_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    tuned_cond, base_cond, tuned_uncond = torch.randn(3, 2, 4, 8, 8, generator=generator)
    combined = finestyle.finestyle_guidance(tuned_cond, base_cond, tuned_uncond, 0.7, 3.0)
    expected = (1 + 0.7 + 3.0) * tuned_cond - 0.7 * base_cond - 3.0 * tuned_uncond
    assert torch.allclose(combined, expected, atol=1e-5)
    # no guidance: the tuned conditional prediction itself
    assert torch.equal(
        finestyle.finestyle_guidance(tuned_cond, base_cond, tuned_uncond, 0, 0), tuned_cond
    )
    # λ1 = 0 is ordinary classifier-free guidance on the tuned model with scale 1 + λ2
    cfg = tuned_uncond + 4.0 * (tuned_cond - tuned_uncond)
    assert torch.allclose(
        finestyle.finestyle_guidance(tuned_cond, base_cond, tuned_uncond, 0, 3.0), cfg, atol=1e-5
    )
    # λ1 moves along (tuned - base): style strength grows linearly with it
    step = finestyle.finestyle_guidance(tuned_cond, base_cond, tuned_uncond, 1.0, 0) - tuned_cond
    assert torch.allclose(step, tuned_cond - base_cond, atol=1e-6)


def test_guided_denoiser_uses_the_base_model_for_lambda1(unet, fresh_unet, unet_inputs) -> None:
    """Inside `finestyle_guided`, the pipeline's CFG step u + g(c - u) over what the denoiser
    returns for [uncond; cond] is FineStyle's ε, whatever g."""
    latents, t, context = unet_inputs
    uncond = torch.zeros_like(context)
    base = fresh_unet()
    finestyle.apply(unet, {"rank": 2})
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.2)
        tuned_cond = unet(latents, t, context).sample
        tuned_uncond = unet(latents, t, uncond).sample
        base_cond = base(latents, t, context).sample
        expected = finestyle.finestyle_guidance(tuned_cond, base_cond, tuned_uncond, 1.5, 2.0)
        for scale in (3.0, 7.5):
            with finestyle.finestyle_guided(unet, 1.5, 2.0, guidance_scale=scale):
                u, c = unet(
                    torch.cat([latents, latents]),
                    t,
                    torch.cat([uncond, context]),
                    return_dict=False,
                )[0].chunk(2)
            assert torch.allclose(u + scale * (c - u), expected, atol=1e-4)
    assert not torch.allclose(tuned_cond, base_cond, atol=1e-4)  # the adapter does something
    # the denoiser is itself again afterwards, adapters on
    with torch.no_grad():
        assert torch.equal(unet(latents, t, context).sample, tuned_cond)
    without_uncond = finestyle.finestyle_guided(unet, 1.0, 2.0, guidance_scale=1.0)
    with pytest.raises(ValueError, match="lambda2"):
        without_uncond.__enter__()
