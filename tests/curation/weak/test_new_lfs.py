"""The chart, greyscale-crop, noise and opaque-alpha LFs on pictures drawn here.

Each LF fires on every planted positive (the kind of non-sticker it is for) and on no sticker,
emoji or icon, and the measurement it thresholds clears its threshold by an asserted margin on
both sides, so a small change of drawing or resampling does not flip the result.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from curation.weak.features import extract_features, feature_table
from curation.weak.labelling_functions import (
    ABSTAIN,
    NOT_STICKER,
    ChartStructure,
    FewColours,
    GreyscaleCrop,
    LabellingFunction,
    NoiseTexture,
    OpaqueAlpha,
)
from tests.curation.weak import synthetic as draw

N = 10
Maker = Callable[[np.random.Generator], Image.Image]


def _stickers(rng: np.random.Generator) -> list[Image.Image]:
    """The negatives every new LF must leave alone: stickers, emoji and icons, both backgrounds."""
    out: list[Image.Image] = []
    for i in range(N):
        out += [
            draw.sticker(rng, transparent=i % 2 == 0),
            draw.emoji(rng, transparent=i % 2 == 1),
            draw.tango_icon(rng),
        ]
    return out


def _table(images: list[Image.Image]) -> dict[str, np.ndarray]:
    return feature_table([extract_features(im) for im in images])


@pytest.fixture(scope="module")
def negatives() -> dict[str, np.ndarray]:
    return _table(_stickers(np.random.default_rng(21)))


def _positives(make: Maker, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return _table([make(rng) for _ in range(N)])


def _fires(lf: LabellingFunction, table: dict[str, np.ndarray]) -> np.ndarray:
    return lf(table) == NOT_STICKER


def test_chart_structure_finds_plots_on_white_and_spares_artwork(negatives) -> None:
    charts = _positives(draw.chart, 1)
    lf = ChartStructure()
    assert _fires(lf, charts).all() and (lf(negatives) == ABSTAIN).all()
    lines = charts["h_lines"] + charts["v_lines"]
    assert lines.min() >= lf.min_lines and charts["white_fraction"].min() >= lf.min_white + 0.15
    # Artwork: either too little white paper, or too few thin lines, by a clear margin.
    artwork_white = negatives["white_fraction"].max()
    assert artwork_white <= lf.min_white - 0.15, artwork_white


def test_greyscale_crop_finds_colourless_crops(negatives) -> None:
    crops = _positives(draw.greyscale_crop, 2)
    lf = GreyscaleCrop()
    assert _fires(lf, crops).all() and (lf(negatives) == ABSTAIN).all()
    assert crops["chroma_mean"].max() <= lf.max_chroma - 5
    assert negatives["chroma_mean"].min() >= lf.max_chroma + 20
    assert crops["border_uniformity"].max() <= lf.max_border_uniformity - 0.2
    # The palette LF no longer calls sixteen grey levels "few colours, so a sticker".
    assert (FewColours()(crops) != 1).all()
    assert (FewColours()(negatives) == 1).mean() >= 0.9


def test_noise_texture_finds_noise_even_with_few_colours(negatives) -> None:
    noise = _positives(draw.noise_texture, 3)
    lf = NoiseTexture()
    assert _fires(lf, noise).all() and (lf(negatives) == ABSTAIN).all()
    assert noise["edge_cells"].min() >= lf.min_edge_cells + 0.1
    assert negatives["edge_cells"].max() <= lf.min_edge_cells - 0.3
    assert (noise["colours_90"] <= 12).any()  # some are palette noise, which fools few_colours


def test_opaque_alpha_finds_flattened_rgba_and_spares_cut_outs(negatives) -> None:
    flattened = _positives(draw.opaque_rgba, 4)
    lf = OpaqueAlpha()
    assert _fires(lf, flattened).all() and (lf(negatives) == ABSTAIN).all()
    assert flattened["opaque_fraction"].min() == 1.0
    cut_outs = negatives["opaque_fraction"][~np.isnan(negatives["opaque_fraction"])]
    assert len(cut_outs) >= N and cut_outs.max() <= lf.min_opaque - 0.2
    photos = _table([draw.photo(np.random.default_rng(5))])  # no alpha channel: no vote
    assert lf(photos)[0] == ABSTAIN and np.isnan(photos["opaque_fraction"][0])


def test_default_recipe_ranks_artwork_above_the_hard_negatives() -> None:
    from curation.weak.recipe import heuristics_recipe, run_recipe

    rng = np.random.default_rng(8)
    positives = _stickers(rng)
    hard = [
        make(rng)
        for make in (draw.chart, draw.greyscale_crop, draw.noise_texture, draw.opaque_rgba)
        for _ in range(N // 2)
    ]
    images = positives + hard
    features = {i: extract_features(im) for i, im in enumerate(images)}
    result = run_recipe(heuristics_recipe(), features)
    top = result.image_ids[: len(positives)]
    assert (top < len(positives)).mean() >= 0.95
