"""Exact and near-duplicate prompts, near-duplicate groups, and a prompt set's diversity.

Exact duplicates compare normalised text (Unicode NFKC, case-folded, punctuation dropped, whitespace
collapsed), so "A cat, happy." and "a cat happy" are one prompt. Near duplicates are pairs whose
normalised embeddings have cosine >= a threshold the user sets; groups are the connected components
of that pair graph (union-find, done with scipy's sparse connected components so 10^6 edges stay
vectorised), largest first.

Finding the pairs uses FAISS inner-product range search. Up to `exact_limit` vectors it is one exact
flat search (BLAS, ~4 s for 20k x 20k x 384 on two cores). Beyond that an all-pairs search grows
quadratically, and FAISS's own IVF range search scans lists without BLAS (measured ~15x slower per
comparison here), so we partition by k-means ourselves: every vector lives in its nearest cluster and
is searched, as a query, against the vectors living in its `n_probe` nearest clusters, one flat
(BLAS) range search per cluster. That is IVF with multi-probe queries; a near-duplicate pair is missed
only when neither vector probes the other's cluster. `bench/prompts.py` measures its recall.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

DEFAULT_THRESHOLD = 0.9
EXACT_LIMIT = 20_000
N_PROBE = 8
_QUERY_BATCH = 2048
_WHITESPACE = re.compile(r"\s+")

PairArrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def normalise_text(text: str) -> str:
    """The key two prompts must share to count as exact duplicates."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return _WHITESPACE.sub(" ", text).strip()


def as_unit_float32(vectors: np.ndarray) -> np.ndarray:
    """Contiguous float32 rows of unit length, which FAISS inner product needs to mean cosine."""
    # NumPy 2 promotes float32 * float64 to float64, which FAISS rejects: cast once, here.
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    if len(x) and not np.allclose(norms[norms > 0], 1.0, atol=1e-3):
        x = x / np.maximum(norms, 1e-12)[:, None]
    return x


def exact_duplicate_groups(texts: Sequence[str]) -> list[list[int]]:
    """Indices sharing a normalised text, groups of two or more, largest first."""
    by_key: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        by_key.setdefault(normalise_text(text), []).append(i)
    return _sorted_groups(g for g in by_key.values() if len(g) > 1)


def _sorted_groups(groups: Iterator[list[int]] | list[list[int]]) -> list[list[int]]:
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def _flat_pairs(x: np.ndarray, threshold: float) -> Iterator[PairArrays]:
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    for start in range(0, len(x), _QUERY_BATCH):
        lims, sims, ids = index.range_search(x[start : start + _QUERY_BATCH], threshold)
        queries = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims.astype(np.int64)))
        keep = ids > queries  # each unordered pair once, never a vector with itself
        yield queries[keep], ids[keep], sims[keep]


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    kmeans = faiss.Kmeans(
        x.shape[1], k, niter=20, seed=seed, spherical=True, max_points_per_centroid=64
    )
    kmeans.train(x)
    assert kmeans.centroids is not None  # train() always sets them
    return kmeans.centroids


def _partitioned_pairs(
    x: np.ndarray, threshold: float, n_lists: int, n_probe: int, seed: int
) -> Iterator[PairArrays]:
    centroids = _kmeans(x, n_lists, seed)
    coarse = faiss.IndexFlatIP(x.shape[1])
    coarse.add(centroids)
    _, probes = coarse.search(x, min(n_probe, n_lists))
    home = probes[:, 0]
    residents = np.argsort(home, kind="stable")
    resident_bounds = np.searchsorted(home[residents], np.arange(n_lists + 1))
    flat_probes = probes.ravel()
    visitors = np.argsort(flat_probes, kind="stable")
    visitor_bounds = np.searchsorted(flat_probes[visitors], np.arange(n_lists + 1))
    visitors //= probes.shape[1]  # position in the flattened (n, n_probe) array -> vector id
    for c in range(n_lists):
        members = residents[resident_bounds[c] : resident_bounds[c + 1]]
        queries = visitors[visitor_bounds[c] : visitor_bounds[c + 1]]
        if len(members) == 0 or len(queries) == 0:
            continue
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x[members])
        lims, sims, ids = index.range_search(x[queries], threshold)
        a = np.repeat(queries, np.diff(lims.astype(np.int64)))
        b = members[ids]
        keep = a != b
        a, b = a[keep], b[keep]
        yield np.minimum(a, b), np.maximum(a, b), sims[keep]


def iter_pair_batches(
    vectors: np.ndarray,
    threshold: float,
    exact_limit: int,
    n_probe: int,
    seed: int,
) -> Iterator[PairArrays]:
    """Near-duplicate edges (i, j, cosine) in batches; in the partitioned search a pair may repeat."""
    x = as_unit_float32(vectors)
    if len(x) < 2:
        return
    if len(x) <= exact_limit:
        yield from _flat_pairs(x, threshold)
    else:
        n_lists = max(16, int(math.sqrt(len(x))))
        yield from _partitioned_pairs(x, threshold, n_lists, n_probe, seed)


def near_duplicate_pairs(
    vectors: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    exact_limit: int = EXACT_LIMIT,
    n_probe: int = N_PROBE,
    seed: int = 0,
) -> list[tuple[int, int, float]]:
    """(i, j, cosine) with i < j and cosine >= threshold, sorted by similarity, highest first.

    Meant for reports and tests on modest sets: a templated set can hold millions of pairs, so
    use `near_duplicate_groups` when only the grouping matters.
    """
    parts = list(iter_pair_batches(vectors, threshold, exact_limit, n_probe, seed))
    if not parts:
        return []
    a, b, sims = (np.concatenate(p) for p in zip(*parts, strict=True))
    _, first = np.unique(a.astype(np.int64) * len(vectors) + b, return_index=True)
    order = first[np.argsort(-sims[first], kind="stable")]
    return [(int(a[k]), int(b[k]), float(sims[k])) for k in order]


def component_labels(n: int, batches: Iterator[PairArrays] | list[PairArrays]) -> np.ndarray:
    """Union-find over streamed edge batches: one label per vector, equal labels = same group.

    Each batch merges components through their current labels, so memory holds one batch of
    edges at a time however many pairs the set has.
    """
    # Here, not at the top: the admin imports this module at start-up, scipy.sparse costs ~0.4 s.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labels = np.arange(n)
    for a, b, _ in batches:
        if len(a) == 0:
            continue
        graph = coo_matrix((np.ones(len(a), dtype=np.int8), (labels[a], labels[b])), shape=(n, n))
        _, merged = connected_components(graph, directed=False)
        labels = merged[labels]
    return labels


def groups_from_labels(labels: np.ndarray, min_size: int = 2) -> list[list[int]]:
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    groups = [g.tolist() for g in np.split(order, bounds) if len(g) >= min_size]
    return _sorted_groups(groups)


def near_duplicate_groups(
    vectors: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    exact_limit: int = EXACT_LIMIT,
    n_probe: int = N_PROBE,
    seed: int = 0,
) -> list[list[int]]:
    """Groups of two or more vectors linked by cosine >= threshold, largest first."""
    batches = iter_pair_batches(vectors, threshold, exact_limit, n_probe, seed)
    return groups_from_labels(component_labels(len(vectors), batches))


@dataclass
class DedupReport:
    exact_groups: list[list[int]]
    near_groups: list[list[int]]  # exact duplicates merged in: every group to collapse
    keep: list[int]  # singletons plus the first prompt of each group, in input order
    drop: list[int]
    threshold: float

    def largest_groups(self, limit: int = 10) -> list[list[int]]:
        return self.near_groups[:limit]


def find_duplicates(
    texts: Sequence[str],
    vectors: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    exact_limit: int = EXACT_LIMIT,
    n_probe: int = N_PROBE,
    seed: int = 0,
) -> DedupReport:
    """Flag exact and near duplicates of a prompt set; `keep` is the deduplicated set."""
    if len(texts) != len(vectors):
        raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
    n = len(texts)
    exact = exact_duplicate_groups(texts)

    def batches() -> Iterator[PairArrays]:
        for group in exact:
            first = np.full(len(group) - 1, group[0])
            yield first, np.array(group[1:]), np.ones(len(group) - 1, dtype=np.float32)
        yield from iter_pair_batches(vectors, threshold, exact_limit, n_probe, seed)

    labels = component_labels(n, batches())
    near = groups_from_labels(labels)
    drop = sorted(i for group in near for i in group[1:])
    dropped = set(drop)
    keep = [i for i in range(n) if i not in dropped]
    return DedupReport(exact, near, keep, drop, threshold)


@dataclass(frozen=True)
class Diversity:
    mean_pairwise_distance: float  # mean (1 - cosine) over distinct pairs, exact
    n_clusters: int
    cluster_coverage: float  # fraction of the k clusters holding >= 1 prompt
    cluster_evenness: float  # exp(entropy of cluster sizes) / k: 1 = prompts spread evenly
    reference: bool  # clusters came from reference centroids, not from this set


def mean_pairwise_distance(vectors: np.ndarray) -> float:
    """Exact mean cosine distance over all distinct pairs in O(n*d).

    For unit vectors sum_{i != j} x_i.x_j = |sum x|^2 - n, so no pair needs sampling however
    large the set is.
    """
    x = as_unit_float32(vectors).astype(np.float64)
    n = len(x)
    if n < 2:
        return 0.0
    total = x.sum(axis=0)
    mean_cos = (total @ total - (x * x).sum()) / (n * (n - 1))
    return float(1.0 - mean_cos)


def fit_reference_centroids(vectors: np.ndarray, k: int = 32, *, seed: int = 0) -> np.ndarray:
    """k-means centroids of a reference pool (e.g. all prompt sets compared), to measure coverage.

    Coverage of clusters fitted on the set itself is ~1 by construction; it only says something
    against clusters fitted on a wider pool.
    """
    x = as_unit_float32(vectors)
    return _kmeans(x, min(k, len(x)), seed)


def diversity(
    vectors: np.ndarray,
    *,
    centroids: np.ndarray | None = None,
    k: int = 32,
    seed: int = 0,
) -> Diversity:
    """Spread of a prompt set: mean pairwise cosine distance plus cluster coverage and evenness.

    With `centroids` (from `fit_reference_centroids` on a wider pool) coverage is the share of
    those reference clusters the set reaches; without, k-means is fitted on the set itself, so
    coverage is ~1 and evenness carries the signal (low when most prompts crowd into few clusters).
    """
    x = as_unit_float32(vectors)
    distance = mean_pairwise_distance(x)
    if len(x) == 0:
        return Diversity(distance, 0, 0.0, 0.0, centroids is not None)
    if centroids is None:
        centroids = _kmeans(x, min(k, len(x)), seed) if len(x) > 1 else x.copy()
        reference = False
    else:
        centroids = as_unit_float32(centroids)
        reference = True
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(centroids)
    _, nearest = index.search(x, 1)
    counts = np.bincount(nearest[:, 0], minlength=len(centroids))
    shares = counts[counts > 0] / len(x)
    entropy = float(-(shares * np.log(shares)).sum())
    return Diversity(
        mean_pairwise_distance=distance,
        n_clusters=len(centroids),
        cluster_coverage=float((counts > 0).mean()),
        cluster_evenness=float(math.exp(entropy) / len(centroids)),
        reference=reference,
    )
