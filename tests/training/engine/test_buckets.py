"""Aspect-ratio bucketing: wide and tall stickers train whole, at about the target pixel count,
one bucket per batch part, with SDXL told the real size and padding, and resume stays exact."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from training.engine.checkpoint import read_lineage
from training.engine.config import ConfigError, TrainConfig
from training.engine.data import ImageOptions, bucket_sizes, load_image, write_manifest
from training.engine.loop import Trainer
from training.engine.run import run_training

# (width, height) of the stickers: wide, tall, square and in between
SIZES = [(64, 32), (32, 64), (48, 48), (60, 36), (36, 60), (40, 40), (70, 30), (30, 66)]


def edge_sticker(width: int, height: int, seed: int = 0) -> Image.Image:
    """Transparent, a red bar at the far left and a green bar at the far right edge."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    bar = max(2, width // 8)
    for x in range(bar):
        for y in range(height):
            image.putpixel((x, y), (255, 0, 0, 255))
            image.putpixel((width - 1 - x, y), (0, 255, 0, 255))
    image.putpixel((width // 2, height // 2), (seed % 256, 0, 0, 255))
    return image


def write_sticker_set(root: Path, role: str, sizes=SIZES) -> dict[str, str]:
    folder = root / role
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (width, height) in enumerate(sizes):
        buffer = io.BytesIO()
        edge_sticker(width, height, seed=index + len(role)).save(buffer, format="PNG")
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        (folder / f"{sha}.png").write_bytes(data)
        rows.append(
            {
                "image_sha256": sha,
                "caption": f"{role} sticker {index}",
                "image_path": f"{sha}.png",
                "split": "train",
            }
        )
    digest = write_manifest(folder / "manifest.parquet", rows)
    return {
        "manifest": str(folder / "manifest.parquet"),
        "sha256": digest,
        "image_root": str(folder),
    }


@pytest.fixture(scope="module")
def sticker_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("stickers")
    return {role: write_sticker_set(root, role) for role in ("domain", "alignment", "style")}


def bucketed(make_config, sticker_sets, **overrides):
    options = {"image_fit": "bucket", "bucket_step": 8, "resolution": 32, **overrides}
    return make_config(datasets=sticker_sets, **options)


def test_bucket_grid_holds_about_the_target_pixel_count():
    sizes = bucket_sizes(64, 8, 2.0)
    assert (64, 64) in sizes and (80, 48) in sizes and (48, 80) in sizes
    for width, height in sizes:
        assert width % 8 == 0 and height % 8 == 0
        assert 0.75 * 64 * 64 <= width * height <= 64 * 64
        assert max(width / height, height / width) <= 2.0


def test_a_wide_sticker_keeps_its_edges_in_its_bucket():
    to_rgb = lambda t: ((t.permute(1, 2, 0).numpy() + 1) * 127.5).round()  # noqa: E731
    options = ImageOptions("bucket", (0, 0, 255), bucket_step=8, bucket_max_aspect=2.0)
    pixels, geometry, _ = load_image(edge_sticker(120, 72), 64, options)
    assert pixels.shape == (3, 48, 80)  # the 5:3 bucket, not a 64x64 square
    rgb = to_rgb(pixels)
    assert rgb[24, 0].tolist() == [255, 0, 0] and rgb[24, 79].tolist() == [0, 255, 0]
    assert geometry.original_size == (72, 120) and geometry.target_size == (48, 80)
    assert geometry.crop_top_left == (0, 0)  # exactly the bucket's aspect: nothing padded
    cropped, _, _ = load_image(edge_sticker(120, 72), 64, ImageOptions("center_crop", (0, 0, 255)))
    assert not (to_rgb(cropped)[..., 0] > 200).any()  # what centre crop does to the same image
    # more extreme than the last bucket: padded on the background, still nothing cut
    wide, wide_geometry, _ = load_image(edge_sticker(160, 40), 64, options)
    rgb = to_rgb(wide)
    assert wide.shape == (3, 48, 96) or wide.shape[1:] == (wide_geometry.target_size)
    assert rgb[rgb.shape[0] // 2, 0].tolist() == [255, 0, 0]
    assert rgb[rgb.shape[0] // 2, -1].tolist() == [0, 255, 0]
    assert rgb[0, rgb.shape[1] // 2].tolist() == [0, 0, 255]
    assert wide_geometry.crop_top_left[0] < 0


def test_sdxl_batches_hold_one_bucket_and_time_ids_carry_the_real_size(
    make_config, family_bases, sticker_sets
):
    config = TrainConfig.from_dict(
        bucketed(make_config, sticker_sets, base_model=str(family_bases("sdxl")), adapter="lora")
    )
    trainer = Trainer(config, device="cpu")
    rows = {row.image_sha256: i for i, row in enumerate(trainer.datasets["domain"].rows)}
    seen_buckets = set()
    for micro in range(8):
        batch = trainer.draw_batch(step=micro, micro_step=micro)
        targets = {g.target_size for g in batch.geometry}
        assert len(targets) == 1 and len(batch.groups) == 1  # one bucket per batch
        ((height, width),) = targets
        seen_buckets.add((width, height))
        assert batch.latents.shape[-2:] == (height // 2, width // 2)  # tiny VAE: 2x
        time_ids = batch.conditioning["added_cond_kwargs"]["time_ids"]
        for sha, ids, geometry in zip(
            batch.image_sha256, time_ids.tolist(), batch.geometry, strict=True
        ):
            real_w, real_h = SIZES[rows[sha]]
            assert ids[:2] == [real_h, real_w]  # the sticker's real size, not the bucket's
            assert ids[2:4] == list(geometry.crop_top_left) and ids[4:] == [height, width]
    assert len(seen_buckets) >= 2 and seen_buckets <= set(bucket_sizes(32, 8, 2.0))
    loss, _ = trainer.train_step()
    assert loss == loss and loss > 0


def test_style_tailoring_parts_in_different_buckets_train_together(make_config, sticker_sets):
    config = TrainConfig.from_dict(
        bucketed(make_config, sticker_sets, recipe="style_tailoring", mix_ratio=0.5)
    )
    trainer = Trainer(config, device="cpu")
    spans = []
    for micro in range(8):
        batch = trainer.draw_batch(step=micro, micro_step=micro)
        for group in batch.groups:
            assert len({batch.geometry[i].target_size for i in range(group.start, group.stop)}) == 1
            assert len(set(batch.roles[group.start : group.stop])) == 1 or len(batch.groups) == 1
        spans.append(len(batch.groups))
        per_sample, _ = trainer._micro_step(batch)
        assert per_sample.shape == (4,) and torch.isfinite(per_sample).all()
    assert 2 in spans  # some batches mixed two buckets, and still gave one loss per sample


def test_bucketed_run_resumes_exactly_and_records_its_buckets(make_config, sticker_sets, tmp_path):
    class Killed(Exception):
        pass

    def kill_at_3(step, total, loss):
        if step == 3:
            raise Killed

    options = {
        "recipe": "style_tailoring",
        "adapter": "lora",
        "adapter_params": {"rank": 2},
        "steps": 4,
        "checkpoint_every": 2,
        "batch_size": 2,
        "random_flip": 0.5,
    }
    straight = run_training(
        bucketed(make_config, sticker_sets, output_dir=str(tmp_path / "a"), **options)
    )
    broken = bucketed(make_config, sticker_sets, output_dir=str(tmp_path / "b"), **options)
    with pytest.raises(Killed):
        run_training(broken, progress=kill_at_3)
    resumed = run_training(broken, resume_from="latest")
    assert resumed.losses == straight.losses
    lineage = read_lineage(resumed.checkpoint_path)
    assert lineage["training_options"]["image_fit"] == "bucket"
    assert lineage["training_options"]["bucket_step"] == 8
    buckets = lineage["data"]["style"]["buckets"]
    assert sum(buckets.values()) == len(SIZES) and len(buckets) >= 2
    state = json.loads(
        (Path(resumed.checkpoint_path) / "training_state" / "trainer.json").read_text()
    )
    assert "buckets" in json.dumps(state)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bucket_step", 12, "multiple of 8"),
        ("bucket_step", 24, "divides resolution"),
        ("bucket_max_aspect", 0.5, "in \\[1, 8\\]"),
    ],
)
def test_bad_bucket_options_name_their_field(make_config, sticker_sets, field, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        TrainConfig.from_dict(bucketed(make_config, sticker_sets, **{field: value}))
    assert caught.value.field == field


def test_a_bucket_step_the_model_cannot_downsample_is_refused(make_config, sticker_sets, tmp_path):
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    from training.engine.tiny import save_tiny_base_model

    deep = save_tiny_base_model(tmp_path / "deep", seed=0)
    # four UNet blocks halve a latent three times: with the 2x VAE, sides are multiples of 16
    UNet2DConditionModel(
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D",) * 3 + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * 3,
        cross_attention_dim=32,
        attention_head_dim=8,
    ).save_pretrained(deep / "unet")
    config = TrainConfig.from_dict(
        bucketed(make_config, sticker_sets, base_model=str(deep), resolution=48)
    )
    with pytest.raises(ConfigError, match="bucket_step: must be a multiple of 16") as caught:
        Trainer(config, device="cpu")
    assert caught.value.field == "bucket_step"
