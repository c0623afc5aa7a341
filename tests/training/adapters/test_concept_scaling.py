"""FineStyle's concept-oriented data scaling: crops follow the attention maps."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from training.engine import concept_scaling
from training.engine.concept_scaling import (
    candidate_words,
    concept_pairs,
    maps_for_tokens,
    pairs_from_attention_maps,
    record_cross_attention,
    word_token_indices,
    write_concept_rows,
)


def _reference() -> Image.Image:
    array = np.zeros((64, 64, 3), np.uint8)
    array[:, :, 2] = 180  # blue background
    array[8:24, 40:56] = (230, 120, 20)  # an orange "fox" top right
    array[40:60, 4:28] = (20, 160, 40)  # a green "tree" bottom left
    return Image.fromarray(array)


def _planted_maps() -> dict[str, np.ndarray]:
    """8x8 maps (one cell = 8 px) where each word attends exactly where its object is."""
    fox, tree = np.zeros((8, 8)), np.zeros((8, 8))
    fox[1:3, 5:7] = 1.0
    tree[5:8, 0:4] = 0.8
    tree += 0.05  # a little background attention: normalisation must ignore it
    return {"fox": fox, "tree": tree}


def test_crops_follow_the_planted_attention_map() -> None:
    image = _reference()
    result = pairs_from_attention_maps(
        image, _planted_maps(), threshold=0.5, min_area=0.02, descriptor="in flat sticker style"
    )
    pairs = {pair.word: pair for pair in result.pairs}
    assert set(pairs) == {"fox", "tree"} and not result.skipped
    # bilinear resizing blurs the cell edges by at most half a cell (4 px)
    for (left, upper, right, lower), expected in [
        (pairs["fox"].box, (40, 8, 56, 24)),
        (pairs["tree"].box, (0, 40, 32, 64)),
    ]:
        assert (
            max(abs(a - b) for a, b in zip((left, upper, right, lower), expected, strict=True)) <= 4
        )
    fox = np.asarray(pairs["fox"].image)
    assert pairs["fox"].image.size == (
        pairs["fox"].box[2] - pairs["fox"].box[0],
        pairs["fox"].box[3] - pairs["fox"].box[1],
    )
    orange = (fox == (230, 120, 20)).all(-1).mean()
    assert orange > 0.9  # the crop is the fox, not the scene
    assert pairs["fox"].prompt == "a fox, in flat sticker style"
    assert pairs["tree"].prompt == "a tree, in flat sticker style"


def test_small_and_flat_regions_are_skipped_with_a_reason() -> None:
    tiny_spot = np.zeros((16, 16))
    tiny_spot[3, 3] = 1.0
    result = pairs_from_attention_maps(
        _reference(), {"speck": tiny_spot, "sky": np.ones((8, 8))}, threshold=0.5, min_area=0.05
    )
    assert result.pairs == []
    assert "min_area" in result.skipped["speck"]
    assert result.skipped["sky"] == "flat attention map"


def test_margin_grows_the_box_within_the_image() -> None:
    maps = {"fox": _planted_maps()["fox"]}
    tight = pairs_from_attention_maps(_reference(), maps, 0.5, 0.0).pairs[0].box
    loose = pairs_from_attention_maps(_reference(), maps, 0.5, 0.0, margin=0.5).pairs[0].box
    assert loose[0] < tight[0] and loose[1] < tight[1] and loose[2] > tight[2]
    assert loose[2] <= 64 and loose[1] >= 0


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="threshold"):
        pairs_from_attention_maps(_reference(), _planted_maps(), threshold=1.5)
    with pytest.raises(ValueError, match="2-D"):
        pairs_from_attention_maps(_reference(), {"fox": np.zeros((2, 2, 2))})


def test_maps_for_tokens_lays_out_each_layer_on_its_grid() -> None:
    # two layers, 4x4 and 2x2 grids over an 8x8 latent; token 2 attends to the top-left quarter
    fine = torch.full((1, 16, 5), 0.01)
    fine.view(1, 4, 4, 5)[0, :2, :2, 2] = 1.0
    coarse = torch.full((1, 4, 5), 0.01)
    coarse[0, 0, 2] = 1.0
    merged = maps_for_tokens({"a": [fine], "b": [coarse]}, [2], (8, 8))
    assert merged.shape == (8, 8)
    assert merged[:4, :4].mean() > 3 * merged[4:, 4:].mean()


def test_recording_leaves_the_unet_output_unchanged(tiny_components, unet_inputs) -> None:
    unet = tiny_components["unet"]
    latents, t, context = unet_inputs
    with torch.no_grad():
        plain = unet(latents, t, context).sample
        processors = dict(unet.attn_processors)
        with record_cross_attention(unet) as store:
            recorded = unet(latents, t, context).sample
    assert torch.equal(plain, recorded)
    assert {type(p) for p in unet.attn_processors.values()} == {
        type(p) for p in processors.values()
    }
    cross = [n for n in processors if ".attn2." in n]
    assert sorted(store) == sorted(cross)
    for probabilities in (records[0] for records in store.values()):
        assert probabilities.shape[0] == 1 and probabilities.shape[2] == 77
        assert torch.allclose(probabilities.sum(-1), torch.ones(probabilities.shape[:2]), atol=1e-4)


def test_word_token_indices(tiny_components) -> None:
    tokenizer = tiny_components["tokenizer"]
    prompt = "a fox under a tree"
    fox = word_token_indices(tokenizer, prompt, "fox")
    ids = tokenizer(prompt).input_ids
    assert fox and [ids[i] for i in fox] == tokenizer("fox", add_special_tokens=False).input_ids
    assert fox[0] > 0  # after the start token
    assert word_token_indices(tokenizer, prompt, "zebra") == []


def test_concept_pairs_on_the_tiny_base_model(tiny_components, tmp_path) -> None:
    image = _reference()
    result = concept_pairs(
        image,
        "a fox and a tree, in flat sticker style",
        ["fox", "tree", "zebra"],
        components=tiny_components,
        descriptor="in flat sticker style",
        threshold=0.6,
        min_area=0.0,
        timesteps=(400, 600),
    )
    assert result.skipped == {"zebra": "not found in the tokenized prompt"}
    assert {p.word for p in result.pairs} == {"fox", "tree"}
    for pair in result.pairs:
        assert pair.prompt == f"a {pair.word}, in flat sticker style"
        left, upper, right, lower = pair.box
        assert 0 <= left < right <= 64 and 0 <= upper < lower <= 64
        assert result.maps[pair.word].shape == (16, 16)  # the tiny model's latent grid

    source = hashlib.sha256(image.tobytes()).hexdigest()
    rows = write_concept_rows(
        result, tmp_path, source_sha256=source, source_prompt="a fox and a tree"
    )
    assert rows[0]["image_sha256"] == source and rows[0]["parent_sha256"] is None
    for row in rows[1:]:
        data = (tmp_path / row["image_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["image_sha256"]
        assert row["parent_sha256"] == source and row["concept"] in {"fox", "tree"}


def test_candidate_words_without_an_nlp_model() -> None:
    words = candidate_words(
        "A fox and a tree in the snow, flat sticker style", exclude=["flat sticker style"]
    )
    assert words == ["fox", "tree", "snow"]
    assert concept_scaling.sub_prompt("fox") == "a fox"
    assert concept_scaling.sub_prompt("fox", "watercolor", "{word} painted in {descriptor}") == (
        "fox painted in watercolor"
    )


@pytest.mark.parametrize("family", ["sdxl", "sd3"])
def test_concept_pairs_on_every_family(family: str) -> None:
    """SDXL (two encoders, time ids) and the SD3 transformer (joint attention) give per-word
    maps on their own latent grid, through the family interface."""
    from training.engine.tiny import build_tiny_components

    components = build_tiny_components(0, family=family)
    denoiser = components["transformer" if family == "sd3" else "unet"]
    with torch.no_grad(), record_cross_attention(denoiser) as store:
        pass
    assert not store  # nothing recorded outside a forward pass
    result = concept_pairs(
        _reference(),
        "a fox and a tree",
        ["fox", "tree", "zebra"],
        components=components,
        threshold=0.6,
        min_area=0.0,
        timesteps=(400, 600),
    )
    assert result.skipped == {"zebra": "not found in the tokenized prompt"}
    assert set(result.maps) == {"fox", "tree"}
    for word in ("fox", "tree"):
        attention = result.maps[word]
        assert attention.ndim == 2 and attention.shape[0] == attention.shape[1] > 1
        assert torch.isfinite(attention).all() and attention.max() > attention.min()
    assert {p.word for p in result.pairs} == {"fox", "tree"}
