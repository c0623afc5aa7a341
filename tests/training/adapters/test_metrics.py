"""Shared CLIP metrics: the math on planted embeddings, then the same numbers from a tiny CLIP."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from training.engine import metrics


def _unit(rows: list[list[float]]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_embedding_math_on_planted_vectors() -> None:
    a = _unit([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    b = _unit([[1, 0, 0], [0, 0, 1], [1, 0, 0]])
    assert torch.allclose(
        metrics.cosine_pairs(a, b), torch.tensor([1.0, 0.0, math.sqrt(0.5)]), atol=1e-6
    )
    references = _unit([[1, 0, 0], [0, 1, 0]])
    assert torch.allclose(
        metrics.mean_similarity(a, references), torch.tensor([0.5, 0.5, math.sqrt(0.5)]), atol=1e-6
    )
    assert torch.allclose(
        metrics.max_similarity(a, references), torch.tensor([1.0, 1.0, math.sqrt(0.5)]), atol=1e-6
    )
    # orthogonal set: every pair at distance 1; identical set: distance 0
    assert metrics.mean_pairwise_distance(
        _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    ) == pytest.approx(1.0)
    assert metrics.mean_pairwise_distance(_unit([[1, 2, 3]] * 4)) == pytest.approx(0.0, abs=1e-6)
    # one pair at 90 degrees and two identical: (1 + 1 + 0) / 3
    assert metrics.mean_pairwise_distance(_unit([[1, 0], [0, 1], [0, 1]])) == pytest.approx(2 / 3)
    # NaN rows (failed images) are ignored, a single valid row has no diversity
    with_nan = torch.cat([_unit([[1, 0], [0, 1]]), torch.full((1, 2), float("nan"))])
    assert metrics.mean_pairwise_distance(with_nan) == pytest.approx(1.0)
    assert math.isnan(metrics.mean_pairwise_distance(_unit([[1, 0]])))


def _images() -> list[Image.Image]:
    red = Image.new("RGB", (32, 32), (220, 30, 30))
    blue = Image.new("RGB", (32, 32), (30, 30, 220))
    stripes = Image.new("RGB", (32, 32), (255, 255, 255))
    stripes.paste((0, 0, 0), (0, 0, 32, 8))
    stripes.paste((0, 0, 0), (0, 16, 32, 24))
    return [red, blue, stripes]


def test_metrics_from_a_tiny_clip_match_the_embedding_math(clip_bundle) -> None:
    images = _images()
    prompts = ["a red square", "a blue square", "stripes"]
    image_rows = metrics.embed_images(clip_bundle, images)
    text_rows = metrics.embed_texts(clip_bundle, prompts)
    assert image_rows.shape == (3, 32) and torch.allclose(
        image_rows.norm(dim=-1), torch.ones(3), atol=1e-5
    )

    assert torch.allclose(
        metrics.text_score(clip_bundle, images, prompts),
        (image_rows * text_rows).sum(-1),
        atol=1e-5,
    )
    style = metrics.style_score(clip_bundle, images, [images[0]])
    assert style[0] == pytest.approx(1.0, abs=1e-5)  # an image is its own perfect style match
    assert torch.allclose(style, image_rows @ image_rows[0], atol=1e-5)
    leakage = metrics.content_leakage(clip_bundle, images, ["a red square", "stripes"])
    assert torch.allclose(leakage, (image_rows @ text_rows[[0, 2]].T).max(-1).values, atol=1e-5)

    diversity = metrics.diversity(clip_bundle, {"same": [images[0]] * 3, "mixed": images})
    assert diversity["same"] == pytest.approx(0.0, abs=1e-5)
    assert diversity["mixed"] == pytest.approx(metrics.mean_pairwise_distance(image_rows), abs=1e-5)
    assert diversity["mixed"] > diversity["same"]


def test_evaluate_generations_survives_a_bad_image(clip_bundle, tmp_path) -> None:
    images = _images()
    generations = [
        ("a red square", images[0]),
        ("a red square", images[1]),
        ("stripes", tmp_path / "gone.png"),
    ]
    result = metrics.evaluate_generations(
        clip_bundle, generations, references=[images[0]], reference_content=["a red square"]
    )
    assert result["n"] == 3 and result["n_failed"] == 1
    assert "gone.png" in result["errors"][0]
    text = metrics.text_score(clip_bundle, images[:2], ["a red square"] * 2)
    assert result["text_score"] == pytest.approx(float(text.mean()), abs=1e-5)
    assert result["style_score"] == pytest.approx(
        float(metrics.style_score(clip_bundle, images[:2], [images[0]]).mean()), abs=1e-5
    )
    # diversity only over prompts with two valid images: the red-square pair
    pair = metrics.embed_images(clip_bundle, images[:2])
    assert result["diversity"] == pytest.approx(metrics.mean_pairwise_distance(pair), abs=1e-5)


def test_open_clip_fallback_bundle_gives_the_same_numbers(clip_bundle) -> None:
    """Without the platform's loader (a bare worker), metrics build the model from open_clip."""
    bare = metrics._open_clip_bundle("tiny-clip", None, seed=0)
    images = _images()
    assert torch.allclose(
        metrics.embed_images(bare, images), metrics.embed_images(clip_bundle, images), atol=1e-6
    )


def test_mismatched_lengths_are_reported(clip_bundle) -> None:
    with pytest.raises(ValueError, match="prompts: 1 prompts for 3 images"):
        metrics.text_score(clip_bundle, _images(), ["one"])
    with pytest.raises(ValueError, match="references"):
        metrics.style_score(clip_bundle, _images(), [])
