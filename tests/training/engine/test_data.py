import shutil

import pytest
import torch
from PIL import Image

from training.engine.data import (
    EpochBatchOrder,
    ImageCaptionDataset,
    ImageLoadError,
    LatentCache,
    ManifestChecksumError,
    ManifestError,
    read_manifest,
    write_manifest,
)
from training.engine.families import Geometry


def test_checksum_mismatch_is_refused_naming_file_and_both_digests(toy_datasets, tmp_path):
    copy = tmp_path / "manifest.parquet"
    shutil.copy(toy_datasets["domain"]["manifest"], copy)
    with copy.open("ab") as handle:
        handle.write(b"tampered")
    expected = toy_datasets["domain"]["sha256"]
    with pytest.raises(ManifestChecksumError) as raised:
        read_manifest(copy, expected)
    message = str(raised.value)
    assert str(copy) in message and expected in message and raised.value.actual in message
    assert raised.value.actual != expected


def test_reads_rows_with_prompt_column_and_split_filter(tmp_path):
    rows = [
        {"image_sha256": "a" * 64, "prompt": "cat", "split": "train", "weight": 2.0},
        {"image_sha256": "b" * 64, "prompt": "dog", "split": "eval", "weight": None},
    ]
    digest = write_manifest(tmp_path / "m.parquet", rows)
    train = read_manifest(tmp_path / "m.parquet", digest, split="train")
    assert [(r.caption, r.weight) for r in train] == [("cat", 2.0)]
    assert read_manifest(tmp_path / "m.parquet", split="eval")[0].weight == 1.0


def test_missing_columns_are_named(tmp_path):
    write_manifest(tmp_path / "m.parquet", [{"image_sha256": "a" * 64}])
    with pytest.raises(ManifestError, match="needs a 'caption' or 'prompt' column"):
        read_manifest(tmp_path / "m.parquet")


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -0.5])
def test_a_weight_that_would_poison_the_loss_is_refused_naming_its_row(tmp_path, weight):
    rows = [
        {"image_sha256": "a" * 64, "caption": "cat", "weight": 1.0},
        {"image_sha256": "b" * 64, "caption": "dog", "weight": weight},
    ]
    write_manifest(tmp_path / "m.parquet", rows)
    with pytest.raises(ManifestError, match=rf"row 1 \(b{{64}}\) has weight {weight}"):
        read_manifest(tmp_path / "m.parquet")


def test_a_zero_weight_is_kept(tmp_path):
    rows = [{"image_sha256": "a" * 64, "caption": "cat", "weight": 0.0}]
    write_manifest(tmp_path / "m.parquet", rows)
    assert read_manifest(tmp_path / "m.parquet")[0].weight == 0.0


def test_a_camera_photo_is_read_upright_as_the_platform_shows_it(tmp_path):
    from training.engine.data.images import image_size, open_image

    # 40 x 20 as stored, tagged "rotate 90 degrees clockwise to view" (EXIF orientation 6);
    # the left half red, so the top is red once upright.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.jpg"
    stored.save(path, exif=exif, quality=95)
    assert image_size(path) == (20, 40)
    upright = open_image(path)
    assert upright.size == (20, 40)
    red, _, blue = upright.convert("RGB").getpixel((10, 5))
    assert red > 200 and blue < 60
    assert open_image(path.read_bytes()).size == (20, 40)
    with Image.open(path) as theirs:
        assert open_image(theirs).size == (20, 40)
        assert theirs.size == (40, 20)  # the caller's image is left as it was


def test_dataset_yields_normalised_pixels_and_caption(toy_datasets):
    spec = toy_datasets["style"]
    dataset = ImageCaptionDataset.from_manifest(spec["manifest"], spec["sha256"], 32)
    pixels, caption = dataset[0]
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert "thick outline" in caption


def test_rgba_is_composited_on_white_and_resolver_is_used(tmp_path):
    clear = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    rows = [{"image_sha256": "c" * 64, "caption": "x"}]
    write_manifest(tmp_path / "m.parquet", rows)
    dataset = ImageCaptionDataset(
        read_manifest(tmp_path / "m.parquet"), 16, resolver=lambda row: clear
    )
    pixels, _ = dataset[0]
    assert pixels.shape == (3, 16, 16)
    assert torch.allclose(pixels, torch.ones_like(pixels))


def test_unreadable_image_error_names_the_sample(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    write_manifest(
        tmp_path / "m.parquet",
        [{"image_sha256": "d" * 64, "caption": "x", "image_path": "bad.png"}],
    )
    dataset = ImageCaptionDataset.from_manifest(tmp_path / "m.parquet", None, 16)
    with pytest.raises(ImageLoadError, match="d{64} \\(bad.png\\)"):
        dataset[0]


def test_batch_order_is_a_permutation_per_epoch_and_resumes():
    order = EpochBatchOrder(5, seed=3)
    first = order.take(5)
    second = order.take(5)
    assert sorted(first) == sorted(second) == list(range(5))
    assert first != second  # reshuffled each epoch
    again = EpochBatchOrder(5, seed=3)
    again.take(7)
    state = again.state_dict()
    resumed = EpochBatchOrder(5, seed=3)
    resumed.load_state_dict(state)
    assert resumed.take(6) == again.take(6)


def test_latent_cache_round_trips_and_is_keyed_by_vae_and_resolution(tmp_path):
    cache = LatentCache(tmp_path, "f" * 64, 32)
    tensor = torch.randn(8, 16, 16)
    assert cache.get("e" * 64) is None
    geometry = Geometry((40, 30), (4, 0), (32, 32))
    cache.put("e" * 64, tensor, geometry)
    parameters, cached_geometry, mask = cache.get("e" * 64)
    assert torch.equal(parameters, tensor) and cached_geometry == geometry and mask is None
    assert (cache.hits, cache.misses) == (1, 1)
    assert LatentCache(tmp_path, "0" * 64, 32).get("e" * 64) is None
    assert LatentCache(tmp_path, "f" * 64, 64).get("e" * 64) is None
