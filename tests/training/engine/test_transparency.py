import io
import json

import numpy as np
import pytest
import torch

from training.engine.tiny import build_tiny_components
from training.engine.toydata import COLOURS, SHAPES, shape_image
from training.engine.transparency import (
    AlphaTrainConfig,
    alpha_metrics,
    build_alpha_decoder,
    load_decoder,
    rgba_to_tensors,
    save_decoder,
    train_alpha_decoder,
)


def _shapes(count, seed, size=16):
    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    return [
        shape_image(SHAPES[i % 3], colours[int(rng.integers(4))], size, rng, rgba=True)
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def vae():
    return build_tiny_components(0)["vae"]


def test_alpha_starts_as_mean_of_rgb_and_rgb_is_unchanged(vae):
    decoder = build_alpha_decoder(vae)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rgb = vae.decode(latents).sample
        rgba = decoder.decode(latents).sample
    assert rgba.shape[1] == 4
    assert torch.equal(rgba[:, :3], rgb)
    assert torch.allclose(rgba[:, 3], rgb.mean(dim=1), atol=1e-5)


def test_metrics_and_compositing():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1.0
    predicted = target.clone()
    predicted[..., 0, 0] = 0.0
    metrics = alpha_metrics(predicted, target)
    assert metrics["iou"] == pytest.approx(7 / 8) and metrics["mae"] == pytest.approx(1 / 16)
    rgb, alpha = rgba_to_tensors(_shapes(1, 0)[0], 16)
    assert alpha.min() == 0.0 and alpha.max() == 1.0
    assert torch.allclose(rgb[:, alpha[0] == 0], torch.ones(1))  # transparent pixels -> white


@pytest.mark.slow
def test_short_training_learns_alpha_on_held_out_shapes_and_round_trips(vae, tmp_path):
    decoder = build_alpha_decoder(vae)
    config = AlphaTrainConfig(steps=80, batch_size=8, learning_rate=3e-3, resolution=16)
    result = train_alpha_decoder(decoder, _shapes(48, 0), config, eval_images=_shapes(12, 1))
    assert result.after["mae"] < 0.6 * result.before["mae"]
    assert result.after["iou"] >= 0.6 > result.before["iou"]
    saved = save_decoder(decoder, tmp_path / "vae_alpha", lineage={"dataset_sha256": "x"})
    loaded = load_decoder(saved)
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.decode(latents).sample, decoder.decode(latents).sample)


def test_generation_with_transparency_decoder_writes_rgba(tiny_base, tmp_path):
    from PIL import Image

    from training.engine.generation import generate

    decoder = build_alpha_decoder(build_tiny_components(0)["vae"])
    with torch.no_grad():  # make alpha clearly depend on the image, as a trained decoder's does
        decoder.decoder.conv_out.weight[3].mul_(40.0)
    path = save_decoder(decoder, tmp_path / "vae_alpha")
    images = generate(
        ["a red circle"],
        [0, 1],
        {"steps": 2, "resolution": 32, "guidance_scale": 1.0},
        base_model=tiny_base,
        device="cpu",
        transparency_decoder=path,
    )
    for item in images:
        assert item.image.mode == "RGBA" and item.metadata["mode"] == "RGBA"
        reread = Image.open(io.BytesIO(item.png_bytes()))
        alpha = np.asarray(reread)[..., 3]
        assert reread.mode == "RGBA" and alpha.min() < alpha.max()
        assert item.metadata["transparency_decoder"] == str(path)


def test_job_body_trains_from_a_verified_rgba_manifest(tiny_base, tmp_path):
    from training.engine.toydata import write_toy_dataset
    from training.engine.transparency import train_transparency_decoder

    spec = write_toy_dataset(tmp_path, "domain", 6, size=16, rgba=True)
    path, result = train_transparency_decoder(
        tiny_base,
        spec["manifest"],
        spec["sha256"],
        tmp_path / "vae_alpha",
        AlphaTrainConfig(steps=3, batch_size=2, resolution=16),
        image_root=spec["image_root"],
        lineage={"run": 7},
    )
    assert len(result.losses) == 3 and load_decoder(path).config.out_channels == 4
    record = json.loads((path / "lineage.json").read_text())
    assert (
        record["run"] == 7
        and (record["train_images"], record["eval_images"]) == (5, 1)  # every 5th held out
        and record["dataset"]["sha256"] == spec["sha256"]
    )


def test_held_out_rows_are_the_marked_split_or_a_fixed_part_by_sha256():
    from training.engine.transparency import split_held_out

    images = _shapes(6, 3)
    marked = [(f"{i:064x}", "val" if i == 2 else "train", image) for i, image in enumerate(images)]
    train, held, how = split_held_out(marked, 0.2)
    assert held == [images[2]] and len(train) == 5 and how["rule"] == "split"
    unmarked = [(f"{i:064x}", "train", image) for i, image in enumerate(images)]
    train, held, how = split_held_out(list(reversed(unmarked)), 0.2)
    assert how["sha256"] == [f"{4:064x}"] and held == [images[4]] and len(train) == 5
    assert split_held_out(unmarked[:1], 0.2)[1] == []  # a single row is never held out


def test_cancel_then_resume_equals_an_uninterrupted_run(vae, tmp_path):
    config = AlphaTrainConfig(steps=6, batch_size=4, learning_rate=3e-3, resolution=16)
    images, held = _shapes(8, 0), _shapes(2, 1)
    straight = build_alpha_decoder(vae)
    expected = train_alpha_decoder(straight, images, config, eval_images=held)

    calls = []

    def cancel_after_three() -> bool:
        calls.append(1)
        return len(calls) > 3

    first = build_alpha_decoder(vae)
    stopped = train_alpha_decoder(
        first,
        images,
        config,
        eval_images=held,
        should_cancel=cancel_after_three,
        resume_dir=tmp_path / "resume",
    )
    assert stopped.cancelled and stopped.step == 3 and stopped.after == {}
    second = build_alpha_decoder(vae)  # a fresh process: nothing but the resume folder survives
    resumed = train_alpha_decoder(
        second, images, config, eval_images=held, resume_dir=tmp_path / "resume"
    )
    assert resumed.resumed_from_step == 3 and not resumed.cancelled
    assert resumed.losses == expected.losses and resumed.before == expected.before
    for name, value in straight.state_dict().items():
        assert torch.equal(second.state_dict()[name], value), name
