"""Sharded, resumable image embedding: reader → mapper → writer, as clip-retrieval does it.

Work is cut into shards of image ids (`plan_shards`); each shard is one job (`embed_shard`) so
many workers can share a pool and a killed job loses at most the shard it was on.

- reader: a thread pool loads, decodes and preprocesses images while the model runs, a bounded
  number of batches ahead (decoding releases the GIL, and so does the forward pass);
- mapper: the model forward in batches, rows L2-normalised;
- writer: the shard is written under temporary names and renamed into place, the JSON sidecar
  last. The sidecar is the commit marker: a shard without a valid sidecar does not exist, so a
  half-written shard never becomes visible and a resumed job simply redoes it.

On-disk format of shard `shard-00042` in `out_dir` (chosen so readers can memory-map vectors):
  shard-00042.npy       float32 (count, dim), unit rows, in the order of ...
  shard-00042.ids.npy   int64 (count,), the image ids embedded (failed images left out)
  shard-00042.json      sidecar: format, count, dim, model name + weights checksum, checksums
                        of both arrays and of the requested ids, failures with reasons
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curation.retrieval.clip_models import ClipBundle, encode_image_tensors, file_sha256
from curation.retrieval.images import ImageSource, open_image

FORMAT = "curation.embedding-shard/1"
ImageLoader = Callable[[int], ImageSource]
ProgressCallback = Callable[[int, int], None]


class EmbeddingCancelled(RuntimeError):
    """The job's cancel flag was seen between batches; nothing of the shard was written."""


class ShardConflictError(RuntimeError):
    """A committed shard of the same name exists for another model or another id list."""


@dataclass(frozen=True)
class ShardSpec:
    """One unit of embedding work: a stable name and the ids it covers."""

    index: int
    ids: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"

    def ids_sha256(self) -> str:
        return hashlib.sha256(np.asarray(self.ids, dtype="<i8").tobytes()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "ids": list(self.ids)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardSpec:
        return cls(index=int(data["index"]), ids=tuple(int(i) for i in data["ids"]))


@dataclass(frozen=True)
class ShardFailure:
    image_id: int
    reason: str


@dataclass
class ShardResult:
    """What one `embed_shard` call left on disk (or found there already, when `skipped`)."""

    spec: ShardSpec
    path: Path  # the sidecar; hand this to build_index / read_shard
    vectors_path: Path
    ids_path: Path
    count: int
    dim: int
    failures: list[ShardFailure] = field(default_factory=list)
    skipped: bool = False
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def plan_shards(ids: Iterable[int], shard_size: int, start_index: int = 0) -> list[ShardSpec]:
    """Cut ids into shards of `shard_size`, sorted and deduplicated so replanning is stable.

    A growing pool should plan its new ids with `start_index` after the last existing shard
    rather than replan everything: a committed shard is never rewritten with other ids.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be ≥ 1, got {shard_size}")
    ordered = sorted({int(i) for i in ids})
    return [
        ShardSpec(index=start_index + n, ids=tuple(ordered[start : start + shard_size]))
        for n, start in enumerate(range(0, len(ordered), shard_size))
    ]


def shard_paths(out_dir: str | Path, name: str) -> tuple[Path, Path, Path]:
    """(sidecar, vectors, ids) paths of shard `name` in `out_dir`."""
    out_dir = Path(out_dir)
    return out_dir / f"{name}.json", out_dir / f"{name}.npy", out_dir / f"{name}.ids.npy"


def _sidecar_for(path: str | Path) -> Path:
    path = Path(path)
    for suffix in (".ids.npy", ".npy", ".json"):
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)] + ".json")
    raise ValueError(f"{path}: not an embedding shard file (.json, .npy or .ids.npy)")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    sidecar = _sidecar_for(path)
    data = json.loads(sidecar.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{sidecar}: format {data.get('format')!r}, expected {FORMAT!r}")
    return data


def _committed(
    spec: ShardSpec, bundle: ClipBundle, out_dir: Path, verify: bool
) -> dict[str, Any] | None:
    sidecar, vectors_path, ids_path = shard_paths(out_dir, spec.name)
    if not sidecar.exists():
        return None
    try:
        data = read_sidecar(sidecar)
    except (ValueError, json.JSONDecodeError):
        return None  # a damaged sidecar means the shard was never committed properly: redo it
    if data["weights_sha256"] != bundle.weights_sha256 or data["ids_sha256"] != spec.ids_sha256():
        raise ShardConflictError(
            f"{sidecar}: committed for model {data['model_name']} ({data['weights_sha256'][:12]}) "
            f"and ids {data['ids_sha256'][:12]}, not for this job's model "
            f"{bundle.model_name} ({bundle.weights_sha256[:12]}) and ids "
            f"{spec.ids_sha256()[:12]}; use one folder per EmbeddingSpace and never replan shards"
        )
    if not (vectors_path.exists() and ids_path.exists()):
        return None
    if verify and (
        file_sha256(vectors_path) != data["vectors_sha256"]
        or file_sha256(ids_path) != data["ids_file_sha256"]
    ):
        return None
    return data


def _save_atomic_npy(array: np.ndarray, final: Path, tag: str) -> tuple[Path, str]:
    tmp = final.with_name(f".{final.name}.{tag}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp, file_sha256(tmp)


def _decode(
    load_image: ImageLoader, bundle: ClipBundle, image_id: int, draft_size: int
) -> torch.Tensor:
    return bundle.preprocess(open_image(load_image(image_id), draft_size=draft_size))


def _batches(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def embed_shard(
    spec: ShardSpec,
    bundle: ClipBundle,
    load_image: ImageLoader,
    out_dir: str | Path,
    *,
    batch_size: int = 64,
    num_workers: int = 4,
    prefetch_batches: int = 2,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    verify_existing: bool = True,
) -> ShardResult:
    """Embed one shard, or return the committed one already in `out_dir` (resume).

    `load_image(image_id)` returns a path, bytes or a PIL image. An image that cannot be loaded
    or decoded is recorded in `failures` with its reason and left out; the shard goes on.
    `progress(done, total)` is called after each batch; `should_cancel()` is checked before
    each batch and raises EmbeddingCancelled, leaving nothing visible behind.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sidecar, vectors_path, ids_path = shard_paths(out_dir, spec.name)
    existing = _committed(spec, bundle, out_dir, verify_existing)
    if existing is not None:
        if progress:
            progress(len(spec.ids), len(spec.ids))
        return ShardResult(
            spec=spec,
            path=sidecar,
            vectors_path=vectors_path,
            ids_path=ids_path,
            count=int(existing["count"]),
            dim=int(existing["dim"]),
            failures=[ShardFailure(int(f["image_id"]), f["reason"]) for f in existing["failures"]],
            skipped=True,
            seconds=time.perf_counter() - started,
        )
    for stale in out_dir.glob(f".{spec.name}.*.tmp"):
        stale.unlink(missing_ok=True)  # left by a killed attempt at this same shard

    vectors: np.ndarray = np.empty((len(spec.ids), bundle.embed_dim), dtype=np.float32)
    kept: list[int] = []
    failures: list[ShardFailure] = []
    # JPEG draft decoding needs only the model's input size, with margin for the centre crop.
    draft_size = bundle.image_size
    done = 0
    with ThreadPoolExecutor(
        max_workers=max(1, num_workers), thread_name_prefix="embed-read"
    ) as pool:
        pending: deque[tuple[Sequence[int], list[Future[torch.Tensor]]]] = deque()
        batches = _batches(spec.ids, batch_size)

        def submit_next() -> None:
            batch = next(batches, None)
            if batch is not None:
                futures = [pool.submit(_decode, load_image, bundle, i, draft_size) for i in batch]
                pending.append((batch, futures))

        for _ in range(max(1, prefetch_batches) + 1):
            submit_next()
        try:
            while pending:
                if should_cancel is not None and should_cancel():
                    raise EmbeddingCancelled(f"{spec.name}: cancelled after {done} images")
                batch, futures = pending.popleft()
                tensors, batch_ids = [], []
                for image_id, future in zip(batch, futures, strict=True):
                    try:
                        tensors.append(future.result())
                        batch_ids.append(int(image_id))
                    except Exception as error:  # one bad image never fails the shard
                        failures.append(ShardFailure(int(image_id), _reason(error)))
                submit_next()  # keep the readers busy while the model runs
                if tensors:
                    rows = encode_image_tensors(bundle, torch.stack(tensors))
                    vectors[len(kept) : len(kept) + len(rows)] = rows
                    kept.extend(batch_ids)
                done += len(batch)
                if progress:
                    progress(done, len(spec.ids))
        finally:
            for _, futures in pending:
                for future in futures:
                    future.cancel()

    tag = uuid.uuid4().hex[:8]
    vectors = vectors[: len(kept)]
    ids_array = np.asarray(kept, dtype=np.int64)
    tmp_vectors, vectors_sha = _save_atomic_npy(vectors, vectors_path, tag)
    tmp_ids, ids_sha = _save_atomic_npy(ids_array, ids_path, tag)
    seconds = time.perf_counter() - started
    meta = {
        "format": FORMAT,
        "shard": spec.name,
        "index": spec.index,
        "count": len(kept),
        "dim": bundle.embed_dim,
        "model_name": bundle.model_name,
        "weights_sha256": bundle.weights_sha256,
        "image_size": bundle.image_size,
        "requested": len(spec.ids),
        "ids_sha256": spec.ids_sha256(),
        "vectors_sha256": vectors_sha,
        "ids_file_sha256": ids_sha,
        "failures": [{"image_id": f.image_id, "reason": f.reason} for f in failures],
        "seconds": round(seconds, 3),
    }
    tmp_sidecar = sidecar.with_name(f".{sidecar.name}.{tag}.tmp")
    tmp_sidecar.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_vectors, vectors_path)
    os.replace(tmp_ids, ids_path)
    os.replace(tmp_sidecar, sidecar)  # the commit: only now does the shard exist
    return ShardResult(
        spec=spec,
        path=sidecar,
        vectors_path=vectors_path,
        ids_path=ids_path,
        count=len(kept),
        dim=bundle.embed_dim,
        failures=failures,
        seconds=seconds,
    )


def _reason(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError):
        return f"file not found: {error.filename or error}"
    name = type(error).__name__
    if name == "UnidentifiedImageError":
        return "not an image Pillow can read"
    if name == "DecompressionBombError":
        return f"too many pixels (decompression bomb): {error}"
    return f"{name}: {error}"


def list_shards(out_dir: str | Path) -> list[Path]:
    """Sidecars of the committed shards in `out_dir`, in shard order."""
    found = []
    for sidecar in sorted(Path(out_dir).glob("shard-*.json")):
        try:
            read_sidecar(sidecar)
        except (ValueError, json.JSONDecodeError):
            continue
        found.append(sidecar)
    return found


def read_shard(path: str | Path, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64, vectors float32) of a committed shard; vectors memory-mapped by default."""
    sidecar = _sidecar_for(path)
    meta = read_sidecar(sidecar)
    _, vectors_path, ids_path = shard_paths(sidecar.parent, meta["shard"])
    vectors = np.load(vectors_path, mmap_mode="r" if mmap else None)
    ids = np.load(ids_path)
    if vectors.shape != (meta["count"], meta["dim"]) or ids.shape != (meta["count"],):
        raise ValueError(
            f"{sidecar}: arrays have shapes {vectors.shape} and {ids.shape}, sidecar says "
            f"({meta['count']}, {meta['dim']})"
        )
    return ids, vectors


def expand_shard_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Sidecar paths from shard files or folders of shards (a folder means all its shards)."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        out.extend(list_shards(path) if path.is_dir() else [_sidecar_for(path)])
    return out


def write_shard(
    out_dir: str | Path,
    name: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    model_name: str = "external",
    weights_sha256: str = "",
) -> Path:
    """Commit vectors made elsewhere as a shard (benchmarks, imports); returns the sidecar."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sidecar, vectors_path, ids_path = shard_paths(out_dir, name)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"{name}: vectors {vectors.shape} do not match ids {ids.shape}")
    tag = uuid.uuid4().hex[:8]
    tmp_vectors, vectors_sha = _save_atomic_npy(vectors, vectors_path, tag)
    tmp_ids, ids_sha = _save_atomic_npy(ids, ids_path, tag)
    meta = {
        "format": FORMAT,
        "shard": name,
        "index": -1,
        "count": len(ids),
        "dim": int(vectors.shape[1]),
        "model_name": model_name,
        "weights_sha256": weights_sha256,
        "requested": len(ids),
        "ids_sha256": hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest(),
        "vectors_sha256": vectors_sha,
        "ids_file_sha256": ids_sha,
        "failures": [],
    }
    tmp_sidecar = sidecar.with_name(f".{sidecar.name}.{tag}.tmp")
    tmp_sidecar.write_text(json.dumps(meta))
    os.replace(tmp_vectors, vectors_path)
    os.replace(tmp_ids, ids_path)
    os.replace(tmp_sidecar, sidecar)
    return sidecar
