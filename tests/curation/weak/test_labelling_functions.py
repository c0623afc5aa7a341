"""Labelling functions: JSON round trip, abstention, and votes on PIL-drawn images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curation.weak.features import extract_features, feature_table
from curation.weak.labelling_functions import (
    ABSTAIN,
    LF_KINDS,
    AspectRatio,
    ClipTextSimilarity,
    SizeLimits,
    default_heuristic_lfs,
    lf_from_config,
    vote_matrix,
)
from tests.curation.weak.synthetic import banner, labelled_pool


def test_every_lf_kind_round_trips_through_json() -> None:
    for kind, cls in LF_KINDS.items():
        lf = cls(name=f"my-{kind}")
        rebuilt = lf_from_config(json.loads(json.dumps(lf.to_config())))
        assert rebuilt == lf and type(rebuilt) is cls
    text = ClipTextSimilarity(query="a cute sticker", positive_above=0.3)
    assert lf_from_config(text.to_config()).name == "text:a cute sticker"


def test_bad_configs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="'glitter'"):
        lf_from_config({"kind": "glitter"})
    with pytest.raises(ValueError, match=r"few_colours.*\['max_colors'\]"):
        lf_from_config({"kind": "few_colours", "max_colors": 3})


def test_missing_features_abstain() -> None:
    table = feature_table([None, {"width": 500, "height": 100}, {"width": 20, "height": 20}])
    votes = vote_matrix([*default_heuristic_lfs(), ClipTextSimilarity()], table)
    assert (votes[0] == ABSTAIN).all()  # nothing known, nothing said
    lf_names = [lf.name for lf in default_heuristic_lfs()]
    assert votes[1, lf_names.index("aspect_ratio")] == 0
    assert votes[2, lf_names.index("size_limits")] == 0
    assert (votes[:, -1] == ABSTAIN).all()  # no similarity column, no vote


def test_heuristic_lfs_separate_drawn_stickers_from_photos() -> None:
    images, labels = labelled_pool(24, 24, seed=3)
    lfs = default_heuristic_lfs()
    votes = vote_matrix(lfs, feature_table([extract_features(im) for im in images]))
    for j, lf in enumerate(lfs):
        voted = votes[:, j] >= 0
        if voted.any():
            precision = (votes[voted, j] == labels[voted]).mean()
            assert precision >= 0.95, lf.name
    names = [lf.name for lf in lfs]
    has_alpha = votes[:, names.index("has_alpha")]
    assert (has_alpha[labels == 1][::2] == 1).all() and (has_alpha[labels == 0] == ABSTAIN).all()
    assert (votes[:, names.index("flat_regions")] == labels).all()


def test_shape_lfs_on_banner_and_tiny_images() -> None:
    table = feature_table([extract_features(banner(np.random.default_rng(0)))])
    assert AspectRatio()(table)[0] == 0 and SizeLimits(min_side=200)(table)[0] == 0
    assert SizeLimits()(table)[0] == ABSTAIN
