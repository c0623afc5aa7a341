"""FAISS indexes chosen by size, in the spirit of autofaiss, with recall measured at build time.

Vectors are unit length and compared by inner product (cosine). What is chosen and why
(DESIGN §6b has the measurements behind it):
- below ~100k vectors an exact flat index: fast enough, recall 1.0, nothing to train;
- above, IVF with scalar-quantised lists (`IVF{nlist},SQ8`): ~4× smaller than flat lists with
  recall ~0.98 on clustered data; flat lists when a memory budget allows them; PQ only when the
  budget forces it, because PQ caps recall (~0.4 at 512-d/64 bytes) whatever nprobe.
Every build measures recall@k of the index against exact search on held-out queries and picks
the smallest nprobe that reaches the target recall; both go into the JSON beside the index.
Held-out image vectors are the easy case: each lies inside the clusters the lists were trained
on. Text queries, as search and recipes use them, lie elsewhere (CLIP's modality gap keeps
text and image embeddings apart), so a build given text-query embeddings measures their recall
too, and raises nprobe until both kinds reach the target.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from curation.retrieval.embedding import expand_shard_paths, read_shard

FORMAT = "curation.vector-index/1"
EXACT_BELOW = 100_000
# faiss warns below 39 training points per list; 64 gives stabler centroids at little cost.
TRAIN_POINTS_PER_LIST = 64
PQ_TRAIN_POINTS = 40 * 256
NPROBE_CANDIDATES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024)


@dataclass
class IndexParams:
    """Everything stored beside an index file, and shown in the admin."""

    spec: str
    dim: int
    n_vectors: int
    metric: str = "inner_product"
    nprobe: int | None = None
    k: int = 100
    recall_at_k: float = 1.0
    target_recall: float = 0.95
    n_queries: int = 0
    text_recall_at_k: float | None = None  # None when no text queries were given
    n_text_queries: int = 0
    train_points: int = 0
    seed: int = 0
    exact_qps: float = 0.0
    index_qps: float = 0.0
    build_seconds: float = 0.0
    nprobe_sweep: list[dict[str, float]] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = {"format": FORMAT, **self.__dict__}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexParams:
        if data.get("format") != FORMAT:
            raise ValueError(f"index params format {data.get('format')!r}, expected {FORMAT!r}")
        return cls(**{k: v for k, v in data.items() if k != "format"})


@dataclass
class VectorIndex:
    """A FAISS index with its parameters; what `build_index` and `load_index` return."""

    index: faiss.Index
    params: IndexParams
    path: Path | None = None

    @property
    def params_path(self) -> Path | None:
        return params_path_for(self.path) if self.path else None


@dataclass
class SearchResult:
    """Per query, ids (−1 where fewer than k matched) and inner-product scores, best first."""

    ids: np.ndarray
    scores: np.ndarray


def params_path_for(index_path: str | Path) -> Path:
    return Path(f"{index_path}.json")


def _as_f32(vectors: np.ndarray) -> np.ndarray:
    # NumPy 2 promotes float32 * float64 to float64, which FAISS rejects or silently copies.
    return np.ascontiguousarray(vectors, dtype=np.float32)


def choose_nlist(n_vectors: int) -> int:
    """Power of two near √n: lists of ~√n vectors; training stays cheap on a few cores."""
    return int(2 ** round(math.log2(max(1.0, math.sqrt(n_vectors)))))


def choose_index_spec(
    n_vectors: int, dim: int, memory_budget: int | None = None, exact_below: int = EXACT_BELOW
) -> str:
    """A faiss factory string for `n_vectors` of `dim`, within `memory_budget` bytes if given."""
    if n_vectors < exact_below:
        return "Flat"
    nlist = choose_nlist(n_vectors)
    per_vector_ids = 8
    if memory_budget is not None and n_vectors * (4 * dim + per_vector_ids) <= memory_budget:
        return f"IVF{nlist},Flat"
    if memory_budget is None or n_vectors * (dim + per_vector_ids) <= memory_budget:
        return f"IVF{nlist},SQ8"
    # PQ: the most bytes per vector that fits, among sub-quantiser counts dividing dim.
    budget_per_vector = memory_budget // n_vectors - per_vector_ids
    choices = [m for m in range(1, dim + 1) if dim % m == 0 and m <= budget_per_vector]
    if not choices:
        raise ValueError(
            f"memory_budget {memory_budget} bytes cannot hold {n_vectors} vectors "
            f"(needs ≥ {n_vectors * (1 + per_vector_ids)} even with 1-byte PQ codes)"
        )
    return f"IVF{nlist},PQ{max(choices)}"


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _make_index(spec: str, dim: int) -> faiss.Index:
    if spec == "Flat":
        return faiss.index_factory(dim, "IDMap,Flat", faiss.METRIC_INNER_PRODUCT)
    return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)


def _shard_counts(shards: Sequence[Path]) -> tuple[int, int]:
    total, dim = 0, None
    for sidecar in shards:
        meta = json.loads(sidecar.read_text())
        if dim is not None and meta["dim"] != dim and meta["count"]:
            raise ValueError(f"{sidecar}: dim {meta['dim']}, other shards have {dim}")
        if meta["count"]:
            dim = meta["dim"]
        total += meta["count"]
    if not total or dim is None:
        raise ValueError("no vectors in the given shards")
    return total, dim


def _take_rows(shards: Sequence[Path], positions: np.ndarray) -> np.ndarray:
    """Rows at global positions (sorted) across shards, read through memory maps."""
    out, offset = [], 0
    for sidecar in shards:
        _, vectors = read_shard(sidecar)
        local = positions[(positions >= offset) & (positions < offset + len(vectors))] - offset
        if len(local):
            out.append(np.asarray(vectors[local]))
        offset += len(vectors)
    return _as_f32(np.concatenate(out))


def exact_search(
    shards: Sequence[Path], queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over all shards, one shard in memory at a time."""
    queries = _as_f32(queries)
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for sidecar in shards:
        ids, vectors = read_shard(sidecar)
        if not len(ids):
            continue
        scores, local = faiss.knn(
            queries, _as_f32(vectors), min(k, len(ids)), faiss.METRIC_INNER_PRODUCT
        )
        mapped = np.where(local >= 0, ids[np.clip(local, 0, None)], -1)
        if scores.shape[1] < k:  # pad so every add has k columns
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            mapped = np.pad(mapped, ((0, 0), (0, pad)), constant_values=-1)
        heap.add_result(_as_f32(scores), np.ascontiguousarray(mapped, dtype=np.int64))
    heap.finalize()
    return heap.D, heap.I


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k that the approximate top-k also returned."""
    hits = 0
    total = 0
    for got, want in zip(found, truth, strict=True):
        want_set = set(want[want >= 0].tolist())
        hits += len(want_set.intersection(got[got >= 0].tolist()))
        total += len(want_set)
    return hits / total if total else 1.0


def _timed_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    _, ids = index.search(queries, k)
    return ids, len(queries) / max(time.perf_counter() - started, 1e-9)


def build_index(
    shard_paths: Iterable[str | Path],
    index_path: str | Path,
    spec: str | None = None,
    *,
    train_sample: int | None = None,
    seed: int = 0,
    k: int = 100,
    n_queries: int = 1000,
    target_recall: float = 0.95,
    memory_budget: int | None = None,
    text_queries: np.ndarray | None = None,
) -> VectorIndex:
    """Train on a sample, add every shard, measure recall@k against exact search, save.

    `text_queries` (unit text embeddings of the same space, one per row) are measured as well:
    recall@k of text→image search, stored as `text_recall_at_k`, and part of the nprobe choice.

    `shard_paths` are shard sidecars (or folders of shards). `spec` is a faiss factory string
    ("Flat", "IVF1024,SQ8", …); None lets `choose_index_spec` decide. Queries for the recall
    measurement are drawn from vectors outside the training sample. The index is written to
    `index_path` and its `IndexParams` to `index_path + ".json"`, both atomically.
    """
    started = time.perf_counter()
    shards = expand_shard_paths(shard_paths)
    n_vectors, dim = _shard_counts(shards)
    spec = spec or choose_index_spec(n_vectors, dim, memory_budget)
    index = _make_index(spec, dim)
    rng = np.random.default_rng(seed)
    ivf = _ivf(index)
    train_points = 0
    order = rng.permutation(n_vectors)
    if not index.is_trained:
        nlist = ivf.nlist if ivf is not None else 1
        wanted = train_sample or TRAIN_POINTS_PER_LIST * nlist
        if "PQ" in spec and not train_sample:
            wanted = max(wanted, PQ_TRAIN_POINTS)  # 256 centroids per sub-quantiser
        train_points = min(n_vectors, wanted)
        if train_points < nlist:
            raise ValueError(f"spec {spec}: {nlist} lists need ≥ {nlist} vectors, have {n_vectors}")
        if ivf is not None:
            ivf.cp.seed = seed
        index.train(_take_rows(shards, np.sort(order[:train_points])))
    for sidecar in shards:
        ids, vectors = read_shard(sidecar)
        if len(ids):
            index.add_with_ids(_as_f32(vectors), np.ascontiguousarray(ids, dtype=np.int64))

    held_out = (
        order[train_points:] if n_vectors - train_points >= min(n_queries, n_vectors) else order
    )
    query_positions = np.sort(held_out[: min(n_queries, len(held_out))])
    queries = _take_rows(shards, query_positions)
    k = min(k, n_vectors)
    exact_started = time.perf_counter()
    _, truth = exact_search(shards, queries, k)
    exact_qps = len(queries) / max(time.perf_counter() - exact_started, 1e-9)

    texts = None
    text_truth = None
    if text_queries is not None and len(text_queries):
        texts = _as_f32(np.atleast_2d(text_queries))
        if texts.shape[1] != dim:
            raise ValueError(f"text queries have dim {texts.shape[1]}, the shards have {dim}")
        _, text_truth = exact_search(shards, texts, k)

    params = IndexParams(
        spec=spec,
        dim=dim,
        n_vectors=n_vectors,
        k=k,
        target_recall=target_recall,
        n_queries=len(queries),
        n_text_queries=0 if texts is None else len(texts),
        train_points=train_points,
        seed=seed,
        exact_qps=exact_qps,
        shards=[str(s) for s in shards],
    )

    def text_recall() -> float | None:
        if texts is None or text_truth is None:
            return None
        return recall_at_k(index.search(texts, k)[1], text_truth)

    if ivf is None:
        found, params.index_qps = _timed_search(index, queries, k)
        params.recall_at_k = recall_at_k(found, truth)
        params.text_recall_at_k = text_recall()
    else:
        for nprobe in [n for n in NPROBE_CANDIDATES if n <= ivf.nlist] or [ivf.nlist]:
            ivf.nprobe = nprobe
            found, qps = _timed_search(index, queries, k)
            recall = recall_at_k(found, truth)
            from_text = text_recall()
            step = {"nprobe": nprobe, "recall": recall, "qps": qps}
            if from_text is not None:
                step["text_recall"] = from_text
            params.nprobe_sweep.append(step)
            params.nprobe, params.recall_at_k, params.index_qps = nprobe, recall, qps
            params.text_recall_at_k = from_text
            if recall >= target_recall and (from_text is None or from_text >= target_recall):
                break
    params.build_seconds = time.perf_counter() - started
    path = Path(index_path)
    _write_atomic(index, params, path)
    return VectorIndex(index=index, params=params, path=path)


def _write_atomic(index: faiss.Index, params: IndexParams, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp_index = path.with_name(f".{path.name}.{tag}.tmp")
    tmp_params = path.with_name(f".{path.name}.json.{tag}.tmp")
    faiss.write_index(index, str(tmp_index))
    tmp_params.write_text(json.dumps(params.to_json(), indent=1))
    os.replace(tmp_index, path)
    os.replace(tmp_params, params_path_for(path))


def load_index(path: str | Path, mmap: bool = True) -> VectorIndex:
    """Read an index and its params; memory-mapped by default so loading takes milliseconds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: index file not found")
    sidecar = params_path_for(path)
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar}: index parameters missing beside {path.name}")
    params = IndexParams.from_json(json.loads(sidecar.read_text()))
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    index = faiss.read_index(str(path), flags)
    ivf = _ivf(index)
    if ivf is not None and params.nprobe:
        ivf.nprobe = params.nprobe
    return VectorIndex(index=index, params=params, path=path)


def search(
    index: VectorIndex | faiss.Index,
    query_vectors: np.ndarray,
    k: int,
    allowed_ids: Iterable[int] | np.ndarray | None = None,
    nprobe: int | None = None,
) -> SearchResult:
    """Top-k by inner product, optionally only among `allowed_ids` (filtered inside FAISS).

    With a filter an IVF index still visits only `nprobe` lists, so a small allowed set may
    return fewer than k hits (ids −1); pass a larger nprobe when filtering hard.
    """
    raw = index.index if isinstance(index, VectorIndex) else index
    queries = _as_f32(np.atleast_2d(query_vectors))
    if queries.shape[1] != raw.d:
        raise ValueError(f"query vectors have dim {queries.shape[1]}, index has {raw.d}")
    k = max(1, min(k, raw.ntotal)) if raw.ntotal else 1
    ivf = _ivf(raw)
    selector = None
    if allowed_ids is not None:
        given = allowed_ids if isinstance(allowed_ids, np.ndarray) else list(allowed_ids)
        allowed = np.ascontiguousarray(given, dtype=np.int64)  # must outlive the search call
        selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
    params: faiss.SearchParameters
    if ivf is not None:
        # Set after construction: the faiss stubs omit the keyword __init__ its wrappers install.
        ivf_params = faiss.SearchParametersIVF()
        ivf_params.nprobe = nprobe or ivf.nprobe
        params = ivf_params
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    scores, ids = raw.search(queries, k, params=params)
    return SearchResult(ids=ids, scores=scores)
