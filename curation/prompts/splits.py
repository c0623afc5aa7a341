"""Generation / held-out evaluation splits in which no near-duplicate crosses the split.

A held-out prompt whose paraphrase was generated (and maybe trained on) measures memorisation, not
generalisation. So whole near-duplicate groups are assigned to one side, then the split is verified
with an exact search between the two sides using the same embeddings; any leak the grouping missed
(possible only when large sets use the partitioned search) moves that evaluation prompt's group to
generation, and the check repeats until it is clean.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from curation.prompts.dedup import (
    DEFAULT_THRESHOLD,
    EXACT_LIMIT,
    N_PROBE,
    as_unit_float32,
    component_labels,
    iter_pair_batches,
)

_QUERY_BATCH = 4096


@dataclass(frozen=True)
class PromptSplit:
    generation: list[int]
    evaluation: list[int]
    threshold: float
    seed: int
    repaired_groups: int  # groups moved to generation after the exact leak check


def check_split_leaks(
    gen_vecs: np.ndarray, eval_vecs: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> list[tuple[int, int, float]]:
    """Exact cross-split pairs (gen row, eval row, cosine) with cosine >= threshold, worst first."""
    gen = as_unit_float32(gen_vecs)
    held = as_unit_float32(eval_vecs)
    if len(gen) == 0 or len(held) == 0:
        return []
    index = faiss.IndexFlatIP(held.shape[1])
    index.add(held)
    leaks: list[tuple[int, int, float]] = []
    for start in range(0, len(gen), _QUERY_BATCH):
        lims, sims, ids = index.range_search(gen[start : start + _QUERY_BATCH], threshold)
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims.astype(np.int64)))
        leaks.extend(zip(rows.tolist(), ids.tolist(), sims.tolist(), strict=True))
    return sorted(leaks, key=lambda leak: -leak[2])


def split_prompts(
    vectors: np.ndarray,
    *,
    eval_fraction: float = 0.1,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    exact_limit: int = EXACT_LIMIT,
    n_probe: int = N_PROBE,
) -> PromptSplit:
    """Assign whole near-duplicate groups to evaluation until it holds ~eval_fraction of prompts.

    Groups are visited in a seeded random order and a group joins evaluation only if it fits the
    remaining quota, so large paraphrase clusters tend to land in generation and the held-out set
    stays made of distinct prompts.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be between 0 and 1, got {eval_fraction}")
    x = as_unit_float32(vectors)
    n = len(x)
    labels = component_labels(n, iter_pair_batches(x, threshold, exact_limit, n_probe, seed))
    group_ids, sizes = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    target = round(eval_fraction * n)
    in_eval = np.zeros(labels.max() + 1 if n else 0, dtype=bool)
    taken = 0
    for position in rng.permutation(len(group_ids)):
        if taken + sizes[position] <= target:
            in_eval[group_ids[position]] = True
            taken += sizes[position]
        if taken == target:
            break

    repaired = 0
    while True:
        evaluation = np.flatnonzero(in_eval[labels]) if n else np.empty(0, dtype=np.int64)
        generation = np.flatnonzero(~in_eval[labels]) if n else np.empty(0, dtype=np.int64)
        leaks = check_split_leaks(x[generation], x[evaluation], threshold)
        if not leaks:
            break
        leaked_groups = np.unique(labels[evaluation[[leak[1] for leak in leaks]]])
        in_eval[leaked_groups] = False
        repaired += len(leaked_groups)
    return PromptSplit(generation.tolist(), evaluation.tolist(), threshold, seed, repaired)
