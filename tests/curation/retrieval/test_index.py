"""FAISS indexes, FAISS-contrib style: synthetic clustered data, approximate against exact."""

from __future__ import annotations

import json

import numpy as np
import pytest

import curation.retrieval  # noqa: F401
from curation.retrieval.embedding import write_shard
from curation.retrieval.index import (
    build_index,
    choose_index_spec,
    load_index,
    params_path_for,
    recall_at_k,
    search,
)

N, DIM = 12_000, 32


def clustered(n: int, dim: int, clusters: int, noise: float = 0.6, seed: int = 0) -> np.ndarray:
    # Clusters that overlap enough that one IVF list rarely holds a query's whole top-k.
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    vectors = clustered(N, DIM, 300)
    ids = np.arange(N, dtype=np.int64) * 7 + 3  # image ids are not row numbers
    for s, start in enumerate(range(0, N, 5000)):
        write_shard(
            folder, f"shard-{s:05d}", ids[start : start + 5000], vectors[start : start + 5000]
        )
    return folder, ids, vectors


def exact(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :k]]


def test_choose_index_spec_follows_size_and_memory() -> None:
    assert choose_index_spec(50_000, 512) == "Flat"
    assert choose_index_spec(1_000_000, 512) == "IVF1024,SQ8"
    assert choose_index_spec(1_000_000, 512, memory_budget=4 * 10**9) == "IVF1024,Flat"
    assert choose_index_spec(1_000_000, 512, memory_budget=100 * 10**6) == "IVF1024,PQ64"
    with pytest.raises(ValueError, match="memory_budget"):
        choose_index_spec(1_000_000, 512, memory_budget=10**6)


def test_flat_index_is_exact(tmp_path, data) -> None:
    folder, ids, vectors = data
    built = build_index([folder], tmp_path / "flat.faiss", k=20, n_queries=100)
    assert built.params.spec == "Flat" and built.params.recall_at_k == 1.0
    result = search(built, vectors[:50], 20)
    np.testing.assert_array_equal(result.ids[:, 0], ids[:50])
    assert recall_at_k(result.ids, exact(vectors, ids, vectors[:50], 20)) > 0.999


def test_ivf_recall_is_measured_against_exact_and_meets_target(tmp_path, data) -> None:
    folder, ids, vectors = data
    built = build_index(
        [folder],
        tmp_path / "ivf.faiss",
        "IVF64,SQ8",
        k=50,
        n_queries=300,
        target_recall=0.9,
        seed=1,
    )
    params = built.params
    assert params.recall_at_k >= 0.9 and params.nprobe is not None and 1 < params.nprobe < 64
    sweep = [step["recall"] for step in params.nprobe_sweep]
    assert sweep[-1] == params.recall_at_k and all(r < 0.9 for r in sweep[:-1])
    # Independent check on fresh queries (perturbed pool vectors) with numpy brute force.
    rng = np.random.default_rng(5)
    queries = vectors[rng.choice(N, 200, replace=False)] + 0.05 * rng.standard_normal((200, DIM))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    measured = recall_at_k(search(built, queries, 50).ids, exact(vectors, ids, queries, 50))
    assert measured >= 0.85
    one_probe = recall_at_k(
        search(built, queries, 50, nprobe=1).ids, exact(vectors, ids, queries, 50)
    )
    assert one_probe < measured  # approximate really is approximate: more lists, more recall
    stored = json.loads(params_path_for(built.path).read_text())
    assert stored["recall_at_k"] == params.recall_at_k and stored["nprobe"] == params.nprobe


@pytest.mark.parametrize("spec", ["Flat", "IVF64,Flat"])
def test_filter_returns_only_allowed_ids(tmp_path, data, spec: str) -> None:
    folder, ids, vectors = data
    built = build_index([folder], tmp_path / "i.faiss", spec, k=10, n_queries=50)
    allowed = ids[::5]
    result = search(built, vectors[:20], 10, allowed_ids=allowed, nprobe=64)
    assert np.isin(result.ids, allowed).all()
    allowed_rows = np.isin(ids, allowed)
    np.testing.assert_array_equal(
        result.ids, exact(vectors[allowed_rows], ids[allowed_rows], vectors[:20], 10)
    )


@pytest.mark.parametrize("spec", ["Flat", "IVF64,SQ8"])
def test_saved_index_reloads_memory_mapped_with_identical_results(tmp_path, data, spec) -> None:
    folder, _, vectors = data
    built = build_index([folder], tmp_path / "x.faiss", spec, k=10, n_queries=50)
    loaded = load_index(tmp_path / "x.faiss", mmap=True)
    assert loaded.params == built.params
    before, after = search(built, vectors[:30], 10), search(loaded, vectors[:30], 10)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_array_equal(before.scores, after.scores)


def test_bad_inputs_are_named(tmp_path, data) -> None:
    folder, _, _ = data
    built = build_index([folder], tmp_path / "f.faiss", "Flat", k=5, n_queries=10)
    with pytest.raises(ValueError, match="dim 8"):
        search(built, np.zeros((1, 8), np.float32), 5)
    with pytest.raises(FileNotFoundError, match="nope.faiss"):
        load_index(tmp_path / "nope.faiss")
    results = search(built, np.ones(DIM, dtype=np.float64), 5)  # float64 is cast, 1-D accepted
    assert results.ids.shape == (1, 5)


def test_text_query_recall_is_measured_and_drives_nprobe(tmp_path, data) -> None:
    folder, ids, vectors = data
    # Text-like queries: near the pool's directions but shifted by one shared offset, as CLIP's
    # modality gap shifts text embeddings away from the image cone.
    rng = np.random.default_rng(9)
    gap = rng.standard_normal(DIM)
    gap *= 1.2 / np.linalg.norm(gap)
    texts = vectors[rng.choice(N, 120, replace=False)] + gap
    texts = (texts / np.linalg.norm(texts, axis=1, keepdims=True)).astype(np.float32)
    built = build_index(
        [folder],
        tmp_path / "ivf.faiss",
        "IVF64,SQ8",
        k=50,
        n_queries=200,
        target_recall=0.9,
        seed=1,
        text_queries=texts,
    )
    params = built.params
    assert params.n_text_queries == 120 and params.text_recall_at_k is not None
    measured = recall_at_k(search(built, texts, 50).ids, exact(vectors, ids, texts, 50))
    assert params.text_recall_at_k == pytest.approx(measured, abs=0.02)
    assert params.text_recall_at_k >= 0.9 and params.recall_at_k >= 0.9
    sweep = params.nprobe_sweep
    assert all("text_recall" in step for step in sweep)
    # Both kinds must reach the target: the sweep stopped at the first nprobe where both did.
    assert all(min(s["recall"], s["text_recall"]) < 0.9 for s in sweep[:-1])
    assert sweep[0]["text_recall"] < sweep[0]["recall"]  # text→image is the harder search
    stored = json.loads(params_path_for(built.path).read_text())
    assert stored["text_recall_at_k"] == params.text_recall_at_k
    flat = build_index([folder], tmp_path / "flat.faiss", k=20, n_queries=50, text_queries=texts)
    assert flat.params.text_recall_at_k == 1.0
    with pytest.raises(ValueError, match="text queries have dim 5"):
        build_index([folder], tmp_path / "x.faiss", k=5, n_queries=5, text_queries=texts[:, :5])
