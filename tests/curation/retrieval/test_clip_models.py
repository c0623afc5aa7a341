"""open_clip models load offline from every supported weights form, bit-exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import curation.retrieval  # noqa: F401  (makes torchvision importable first)
from curation.retrieval.clip_models import (
    TINY_CLIP,
    encode_images,
    encode_texts,
    file_sha256,
    load_clip,
    save_local_dir,
    save_weights,
)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(3)]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_random_init_is_reproducible_and_named_by_its_seed() -> None:
    first, again, other = (load_clip(TINY_CLIP, None, seed=s) for s in (0, 0, 1))
    assert first.embed_dim == 32 and first.image_size == 32
    assert first.weights_sha256 == again.weights_sha256 != other.weights_sha256
    assert _same_weights(first.model, again.model)


def test_a_random_init_asked_for_stays_quiet_and_others_are_not_hidden(caplog) -> None:
    import open_clip

    from training.engine.metrics import load_metric_clip

    with caplog.at_level("WARNING"):
        load_clip(TINY_CLIP, None, seed=0)
        load_metric_clip(TINY_CLIP, None, seed=0)
    assert not [r for r in caplog.records if "pretrained" in r.getMessage()]
    with caplog.at_level("WARNING"):  # the filter was taken off again
        open_clip.create_model_and_transforms(TINY_CLIP, pretrained=None)
    assert any("No pretrained weights" in r.getMessage() for r in caplog.records)


def test_encoders_return_unit_float32_rows() -> None:
    bundle = load_clip(TINY_CLIP, None)
    texts = encode_texts(bundle, ["a sticker of a cat", "a photo"])
    images = encode_images(bundle, [*_images(), Image.new("RGBA", (20, 20), (0, 0, 0, 0))])
    for array, rows in ((texts, 2), (images, 4)):
        assert array.dtype == np.float32 and array.shape == (rows, 32)
        np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(texts[0], texts[1])


@pytest.mark.parametrize("form", ["safetensors", "pt", "local-dir"])
def test_saved_weights_reload_bit_exactly(tmp_path, form: str) -> None:
    source = load_clip(TINY_CLIP, None, seed=3)
    if form == "safetensors":
        weights = str(save_weights(source, tmp_path / "tiny.safetensors"))
    elif form == "pt":
        weights = str(tmp_path / "epoch_1.pt")
        torch.save({"epoch": 1, "state_dict": source.model.state_dict()}, weights)
    else:
        weights = save_local_dir(source, tmp_path / "folder")
    loaded = load_clip(TINY_CLIP, weights)
    assert _same_weights(source.model, loaded.model)
    assert np.array_equal(encode_images(source, _images()), encode_images(loaded, _images()))
    if form != "local-dir":
        assert loaded.weights_sha256 == file_sha256(weights)


def test_bad_weights_are_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_clip(TINY_CLIP, tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="not-a-model"):
        load_clip("not-a-model", None)
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match="w.txt"):
        load_clip(TINY_CLIP, tmp_path / "w.txt")


@pytest.mark.slow
def test_vit_b_32_weights_file_round_trips_through_the_same_code(tmp_path) -> None:
    source = load_clip("ViT-B-32", None, seed=0)
    path = save_weights(source, tmp_path / "vit-b-32.safetensors")
    loaded = load_clip("ViT-B-32", path)
    assert loaded.embed_dim == 512 and loaded.image_size == 224
    assert _same_weights(source.model, loaded.model)
    assert loaded.weights_sha256 == file_sha256(path)
    image = _images()[:1]
    assert np.array_equal(encode_images(source, image), encode_images(loaded, image))
