"""Query builders: text, exemplars, image ids, and positive/negative combination."""

from __future__ import annotations

import numpy as np
import pytest

import curation.retrieval  # noqa: F401
from curation.retrieval.clip_models import TINY_CLIP, encode_texts, load_clip
from curation.retrieval.embedding import write_shard
from curation.retrieval.search import (
    VectorStore,
    combine_queries,
    image_id_query,
    mean_query,
    text_query,
)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def test_combined_query_ranks_like_weighted_score_difference() -> None:
    rng = np.random.default_rng(0)
    pool, pos, neg = (
        unit(rng.standard_normal((500, 16))),
        unit(rng.standard_normal((2, 16))),
        unit(rng.standard_normal(16)),
    )
    query = combine_queries([pos[0], pos[1]], [neg], [1.0, 2.0], [0.7])
    assert query.dtype == np.float32 and np.isclose(np.linalg.norm(query), 1.0)
    by_query = np.argsort(-(pool @ query))
    by_scores = np.argsort(-(pool @ pos[0] + 2.0 * (pool @ pos[1]) - 0.7 * (pool @ neg)))
    np.testing.assert_array_equal(by_query, by_scores)
    with pytest.raises(ValueError, match="zero length"):
        combine_queries([pos[0]], [pos[0]], negative_weights=[1.0])


def test_mean_query_is_the_renormalised_centroid() -> None:
    vectors = np.array([[1, 0, 0], [0, 2, 0]], np.float32)  # unnormalised on purpose
    np.testing.assert_allclose(
        mean_query(vectors), unit(np.array([1, 1, 0], np.float32)), rtol=1e-6
    )


def test_vector_store_looks_up_ids_across_shards(tmp_path) -> None:
    rng = np.random.default_rng(1)
    vectors = unit(rng.standard_normal((10, 8)))
    ids = np.array([50, 10, 40, 20, 30, 90, 60, 80, 70, 100])
    write_shard(tmp_path, "shard-00000", ids[:6], vectors[:6])
    write_shard(tmp_path, "shard-00001", ids[6:], vectors[6:])
    store = VectorStore.from_shards([tmp_path])
    np.testing.assert_array_equal(store.get([30, 100, 50]), vectors[[4, 9, 0]])
    np.testing.assert_allclose(image_id_query(store, [10, 20]), mean_query(vectors[[1, 3]]))
    with pytest.raises(KeyError, match=r"\[11, 12\]"):
        store.get([10, 11, 12])
    np.testing.assert_allclose(store.scores(vectors[2]), store.vectors @ vectors[2], rtol=1e-6)


def test_text_query_uses_the_encoder() -> None:
    bundle = load_clip(TINY_CLIP, None)
    query = text_query(bundle, ["a sticker", "a sticker of a dog"])
    np.testing.assert_allclose(
        query, mean_query(encode_texts(bundle, ["a sticker", "a sticker of a dog"])), rtol=1e-5
    )
