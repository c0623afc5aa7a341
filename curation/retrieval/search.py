"""Query vectors for search and recipes: by text, by exemplar images, by image id, combined.

All vectors are float32 and unit length, so one inner product ranks images by cosine. A
combined query sums weighted positives and subtracts weighted negatives; because scores are
linear in the query, ranking by the combined vector equals ranking by
Σ wᵢ·sim(posᵢ) − Σ vⱼ·sim(negⱼ), the usual positive/negative prompt scoring, in one search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from curation.retrieval.clip_models import ClipBundle, encode_images, encode_texts
from curation.retrieval.embedding import expand_shard_paths, read_shard


def normalise(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not np.isfinite(norm):
        raise ValueError("query vector has zero length: positives and negatives cancel out")
    return (vector / norm).astype(np.float32)


def text_query(
    bundle: ClipBundle, texts: Sequence[str], weights: Sequence[float] | None = None
) -> np.ndarray:
    """One query vector for several phrasings of the same idea (weighted mean, renormalised)."""
    if not texts:
        raise ValueError("text_query needs at least one text")
    vectors = encode_texts(bundle, texts)
    return mean_query(vectors, weights)


def mean_query(vectors: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of unit vectors, renormalised: the centroid direction of exemplars."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if not len(vectors):
        raise ValueError("mean_query needs at least one vector")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    w = np.ones(len(unit), np.float32) if weights is None else np.asarray(weights, np.float32)
    return normalise((w[:, None] * unit).sum(axis=0))


def exemplar_query(bundle: ClipBundle, images: Sequence[Image.Image]) -> np.ndarray:
    """Query from example images that are not (yet) in the embedded pool."""
    return mean_query(encode_images(bundle, images))


class VectorStore:
    """Look vectors up by image id from committed shards (memory-mapped) or arrays in memory."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self.vectors = vectors
        if len(self.ids) != len(vectors):
            raise ValueError(f"{len(self.ids)} ids for {len(vectors)} vectors")
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    @classmethod
    def from_shards(cls, paths: Iterable[str | Path]) -> VectorStore:
        parts = [read_shard(p) for p in expand_shard_paths(paths)]
        if not parts:
            raise ValueError("no committed shards found")
        ids = np.concatenate([ids for ids, _ in parts])
        vectors = np.concatenate([np.asarray(v) for _, v in parts]).astype(np.float32, copy=False)
        return cls(ids, vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def positions(self, image_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row positions of `image_ids`; raises naming the ids that have no vector."""
        wanted = np.asarray(image_ids, dtype=np.int64)
        at = np.searchsorted(self._sorted, wanted).clip(max=max(len(self._sorted) - 1, 0))
        found = len(self._sorted) > 0 and self._sorted[at] == wanted
        missing = wanted[~found] if len(self._sorted) else wanted
        if len(missing):
            raise KeyError(f"no embedding for image ids {missing[:10].tolist()}")
        return self._order[at]

    def get(self, image_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.asarray(self.vectors[self.positions(image_ids)], dtype=np.float32)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Inner product of every stored vector with `query`, in store order."""
        return np.asarray(self.vectors, dtype=np.float32) @ np.asarray(query, dtype=np.float32)


def image_id_query(store: VectorStore, image_ids: Sequence[int]) -> np.ndarray:
    """Query from images already embedded: the renormalised mean of their vectors."""
    return mean_query(store.get(image_ids))


def combine_queries(
    positives: Sequence[np.ndarray],
    negatives: Sequence[np.ndarray] = (),
    positive_weights: Sequence[float] | None = None,
    negative_weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Σ wᵢ·posᵢ − Σ vⱼ·negⱼ, renormalised (negatives default to weight 0.5 each)."""
    if not len(positives):
        raise ValueError("combine_queries needs at least one positive query")
    pw = positive_weights or [1.0] * len(positives)
    nw = negative_weights or [0.5] * len(negatives)
    if len(pw) != len(positives) or len(nw) != len(negatives):
        raise ValueError("one weight per query, please")
    total = np.zeros_like(np.asarray(positives[0], dtype=np.float32))
    for weight, vector in zip(pw, positives, strict=True):
        total += np.float32(weight) * normalise(vector)
    for weight, vector in zip(nw, negatives, strict=True):
        total -= np.float32(weight) * normalise(vector)
    return normalise(total)
