"""Alpha as a loss mask: transparent pixels of a sticker never reach the gradient."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from training.engine.config import ConfigError, TrainConfig
from training.engine.data import ImageOptions, load_image
from training.engine.data.alpha import masked_mse
from training.engine.loop import Trainer
from training.engine.toydata import write_toy_dataset


def test_masked_loss_has_no_gradient_outside_the_mask_and_is_normalised_by_its_area():
    prediction = torch.zeros(2, 4, 8, 8, requires_grad=True)
    target = torch.ones(2, 4, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :, :2] = 1  # a thin sliver
    mask[1, :, :, :6] = 1  # most of the image
    loss = masked_mse(prediction, target, mask)
    assert torch.allclose(loss, torch.ones(2))  # the same error per pixel: the same loss
    loss.sum().backward()
    assert (prediction.grad[0, :, :, 2:] == 0).all() and (prediction.grad[1, :, :, 6:] == 0).all()
    assert (prediction.grad[0, :, :, :2] != 0).all()
    assert torch.equal(masked_mse(prediction, target, None), loss.detach())


def test_the_mask_follows_the_fit_and_padding_is_masked_out():
    sticker = Image.new("RGBA", (32, 16), (0, 0, 0, 0))
    for x in range(16):
        for y in range(16):
            sticker.putpixel((x, y), (255, 0, 0, 255))  # opaque left half
    pixels, _, mask = load_image(sticker, 32, ImageOptions("pad", alpha_mode="loss_mask"))
    assert mask is not None and mask.shape == (1, 32, 32)
    assert mask[0, 16, 2] == 1 and mask[0, 16, 30] == 0  # transparent right half
    assert mask[0, 0, 2] == 0  # padding above the wide sticker
    assert load_image(sticker, 32, ImageOptions("pad")).mask is None  # composite: no mask
    opaque = load_image(
        sticker.convert("RGB"), 32, ImageOptions("center_crop", alpha_mode="loss_mask")
    )
    assert opaque.mask is not None and bool((opaque.mask == 1).all())


@pytest.fixture(scope="module")
def rgba_set(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("rgba"), "domain", 4, seed=3, rgba=True)


def test_transparent_pixels_do_not_reach_the_gradient(make_config, rgba_set):
    config = TrainConfig.from_dict(
        make_config(datasets={"domain": rgba_set}, alpha_mode="loss_mask")
    )
    trainer = Trainer(config, device="cpu")
    assert trainer.lineage_record()["training_options"]["alpha_mode"] == "loss_mask"
    batch = trainer.draw_batch()
    (group,) = batch.groups
    assert group.masks is not None and group.masks.shape == (4, 1, 16, 16)
    assert (group.masks == 0).any() and (group.masks > 0).any()  # shapes on transparency
    outputs = []

    def keep(module, inputs, output):
        output[0].retain_grad()
        outputs.append(output[0])

    handle = trainer.denoiser.register_forward_hook(keep)
    per_sample, _ = trainer._micro_step(batch)
    handle.remove()
    per_sample.sum().backward()
    grad = outputs[0].grad
    outside = (group.masks == 0).expand_as(grad)
    assert (grad[outside] == 0).all()
    assert (grad[~outside] != 0).any()
    # composite mode on the same batch: the transparent background is trained too
    composite = Trainer(
        TrainConfig.from_dict(make_config(datasets={"domain": rgba_set})), device="cpu"
    )
    plain = composite.draw_batch()
    assert plain.groups[0].masks is None and plain.image_sha256 == batch.image_sha256


def test_an_unknown_alpha_mode_names_its_field(make_config):
    with pytest.raises(ConfigError, match="alpha_mode: 'ignore' is not one of") as caught:
        TrainConfig.from_dict(make_config(alpha_mode="ignore"))
    assert caught.value.field == "alpha_mode"
