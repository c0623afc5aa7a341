"""Leak-free generation/evaluation splits on synthetic vectors with planted near-duplicate groups."""

import numpy as np
import pytest

from curation.prompts.dedup import near_duplicate_groups
from curation.prompts.splits import check_split_leaks, split_prompts


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def set_with_groups(seed: int = 0):
    """500 distinct vectors, then 60 groups of 2-6 near-copies of some of them."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(500, 48))
    rows = [base]
    for source in rng.choice(500, 60, replace=False):
        size = rng.integers(1, 6)
        rows.append(base[source] + 0.1 * rng.normal(size=(size, 48)))
    return unit(np.vstack(rows))


def test_check_split_leaks_finds_cross_pairs_exactly():
    rng = np.random.default_rng(1)
    gen = unit(rng.normal(size=(30, 16)))
    held = unit(rng.normal(size=(10, 16)))
    held[3] = unit(gen[7] + 0.01 * rng.normal(size=16))
    leaks = check_split_leaks(gen, held, 0.95)
    assert [(g, e) for g, e, _ in leaks] == [(7, 3)]
    assert leaks[0][2] > 0.95
    assert check_split_leaks(gen, held[:0], 0.95) == []


@pytest.mark.parametrize("exact_limit", [100_000, 0], ids=["flat", "partitioned"])
def test_split_keeps_near_duplicate_groups_on_one_side(exact_limit):
    vectors = set_with_groups()
    split = split_prompts(
        vectors, eval_fraction=0.2, seed=3, threshold=0.9, exact_limit=exact_limit, n_probe=2
    )
    gen, held = split.generation, split.evaluation
    assert sorted(gen + held) == list(range(len(vectors)))
    assert abs(len(held) - 0.2 * len(vectors)) <= 6  # whole groups: within one group of the target
    assert check_split_leaks(vectors[gen], vectors[held], 0.9) == []
    held_set = set(held)
    for group in near_duplicate_groups(vectors, 0.9):
        sides = {i in held_set for i in group}
        assert len(sides) == 1, f"group {group} crosses the split"


def test_split_is_deterministic_under_a_seed():
    vectors = set_with_groups()
    a = split_prompts(vectors, eval_fraction=0.1, seed=5)
    assert a == split_prompts(vectors, eval_fraction=0.1, seed=5)
    assert a.evaluation != split_prompts(vectors, eval_fraction=0.1, seed=6).evaluation


def test_bad_fraction_is_refused():
    with pytest.raises(ValueError, match="eval_fraction"):
        split_prompts(set_with_groups(), eval_fraction=1.0)


def test_pairs_the_partitioned_grouping_misses_are_repaired_by_the_exact_check():
    # Unclustered vectors searched with a single probe: some near-copies land in another cell, so
    # the grouping misses them and only the exact cross-split check can catch the leak.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2000, 64))
    copies = base[rng.choice(2000, 300, replace=False)] + 0.5 * rng.normal(size=(300, 64))
    vectors = unit(np.vstack([base, copies]))
    split = split_prompts(
        vectors, eval_fraction=0.3, seed=1, threshold=0.8, exact_limit=0, n_probe=1
    )
    assert split.repaired_groups > 0
    assert check_split_leaks(vectors[split.generation], vectors[split.evaluation], 0.8) == []
