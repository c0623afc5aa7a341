"""Dedup, grouping and diversity on synthetic unit vectors (the real model is in test_semantic.py)."""

import itertools

import numpy as np
import pytest

from curation.prompts.dedup import (
    diversity,
    exact_duplicate_groups,
    find_duplicates,
    fit_reference_centroids,
    mean_pairwise_distance,
    near_duplicate_groups,
    near_duplicate_pairs,
    normalise_text,
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered_with_planted_pairs(seed: int = 0, n: int = 3000, planted: int = 200, dim: int = 64):
    """Clustered points (so partitions matter) plus `planted` near-copies of random points."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    base = centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, dim))
    sources = rng.choice(n, planted, replace=False)
    copies = base[sources] + 0.15 * rng.normal(size=(planted, dim))
    return unit(np.vstack([base, copies])), {(int(s), n + k) for k, s in enumerate(sources)}


def test_normalise_text_ignores_case_whitespace_and_punctuation():
    assert normalise_text("  A Cat,   happy!! ") == normalise_text("a cat happy") == "a cat happy"
    assert normalise_text("ｃａｔ") == "cat"  # full-width letters (NFKC)
    assert normalise_text("a cat") != normalise_text("a cart")


def test_exact_duplicate_groups_largest_first():
    texts = ["a dog", "A cat.", "a fox", "a cat", "A DOG!", "a  dog", "a bird"]
    assert exact_duplicate_groups(texts) == [[0, 4, 5], [1, 3]]


def test_flat_search_finds_exactly_the_pairs_above_threshold():
    vectors, _ = clustered_with_planted_pairs(n=400, planted=30)
    sims = vectors @ vectors.T
    expected = {(i, j) for i, j in zip(*np.nonzero(np.triu(sims >= 0.9, k=1)), strict=True)}
    found = near_duplicate_pairs(vectors, 0.9)
    assert {(i, j) for i, j, _ in found} == expected
    assert all(i < j and s >= 0.9 for i, j, s in found)
    assert [s for *_, s in found] == sorted((s for *_, s in found), reverse=True)


def test_partitioned_search_recall_against_exact():
    vectors, planted = clustered_with_planted_pairs()
    exact = {(i, j) for i, j, _ in near_duplicate_pairs(vectors, 0.9)}
    assert planted <= exact
    approx = near_duplicate_pairs(vectors, 0.9, exact_limit=0, n_probe=4)
    approx_pairs = {(i, j) for i, j, _ in approx}
    assert approx_pairs <= exact  # every reported pair is a real one
    assert len(approx_pairs) == len(approx)  # no pair reported twice
    assert len(approx_pairs & exact) / len(exact) >= 0.99


def test_groups_are_transitive_components_largest_first():
    rng = np.random.default_rng(1)
    vectors = unit(rng.normal(size=(50, 32)))
    # A chain 0 ~ 10 ~ 11 at cosine 0.98 per step, while 0 and 11 are only at cos(2 theta) = 0.92.
    v0 = vectors[0]
    u = rng.normal(size=32)
    u = unit(u - (u @ v0) * v0)
    theta = np.arccos(0.98)
    vectors[10] = np.cos(theta) * v0 + np.sin(theta) * u
    vectors[11] = np.cos(2 * theta) * v0 + np.sin(2 * theta) * u
    vectors[20] = unit(vectors[5] + 0.02 * rng.normal(size=32))
    assert vectors[0] @ vectors[11] < 0.95
    groups = near_duplicate_groups(vectors, 0.97)
    assert groups == [[0, 10, 11], [5, 20]]
    assert near_duplicate_groups(vectors, 0.97, exact_limit=0) == groups


def test_find_duplicates_merges_exact_text_and_vector_duplicates():
    rng = np.random.default_rng(2)
    vectors = unit(rng.normal(size=(6, 16)))
    vectors[4] = unit(vectors[1] + 0.01 * rng.normal(size=16))
    texts = ["a cat", "a dog", "A cat!", "a fox", "a puppy", "a bird"]
    report = find_duplicates(texts, vectors, 0.95)
    assert report.exact_groups == [[0, 2]]
    assert report.near_groups == [[0, 2], [1, 4]]
    assert report.keep == [0, 1, 3, 5]
    assert report.drop == [2, 4]
    with pytest.raises(ValueError, match="6 texts but 5 vectors"):
        find_duplicates(texts, vectors[:5])


def test_mean_pairwise_distance_is_exact():
    rng = np.random.default_rng(3)
    vectors = unit(rng.normal(size=(60, 8)))
    brute = np.mean([1 - vectors[i] @ vectors[j] for i, j in itertools.combinations(range(60), 2)])
    assert mean_pairwise_distance(vectors) == pytest.approx(brute, abs=1e-6)
    assert mean_pairwise_distance(np.repeat(vectors[:1], 5, axis=0)) == pytest.approx(0, abs=1e-6)
    assert mean_pairwise_distance(vectors[:1]) == 0.0


def test_diversity_coverage_against_reference_clusters():
    rng = np.random.default_rng(4)
    centres = unit(rng.normal(size=(16, 32)))
    pool = unit(np.repeat(centres, 50, axis=0) + 0.05 * rng.normal(size=(800, 32)))
    # Known centres make the expected coverage exact; fitting them is checked separately below.
    reference = centres
    narrow = pool[:100]  # the first two source clusters only
    wide = pool[::8]  # every cluster
    narrow_div = diversity(narrow, centroids=reference)
    wide_div = diversity(wide, centroids=reference)
    assert narrow_div.reference and narrow_div.n_clusters == 16
    assert narrow_div.cluster_coverage == pytest.approx(2 / 16)
    assert wide_div.cluster_coverage == pytest.approx(1.0)
    assert wide_div.cluster_evenness > 0.95
    assert narrow_div.mean_pairwise_distance < wide_div.mean_pairwise_distance
    fitted = fit_reference_centroids(pool, k=16, seed=0)
    assert fitted.shape == (16, 32)
    assert diversity(wide, centroids=fitted).cluster_coverage >= 14 / 16


def test_diversity_without_reference_uses_evenness():
    rng = np.random.default_rng(5)
    crowded = unit(
        np.vstack(
            [
                np.tile(rng.normal(size=(1, 32)), (190, 1)) + 0.01 * rng.normal(size=(190, 32)),
                rng.normal(size=(10, 32)),
            ]
        )
    )
    spread = unit(rng.normal(size=(200, 32)))
    assert diversity(crowded, k=8).cluster_evenness < diversity(spread, k=8).cluster_evenness
    assert diversity(spread, k=8).cluster_coverage == 1.0
    empty = diversity(np.empty((0, 32), dtype=np.float32))
    assert empty.n_clusters == 0
