"""Retrieval benchmark: the platform against its bare-library baseline, measured in one process.

    python bench/retrieval.py [--quick]

Prints progress lines, then as its LAST line one JSON object:
- embed_vs_bare: images/s of `embed_shard` (decode JPEG bytes + preprocess in reader threads,
  model forward, atomic shard write) over images/s of a plain batched open_clip forward loop
  over the same images already decoded and preprocessed (so the ratio is what decoding and
  writing cost once overlapped). Full mode uses the ViT-B-32 architecture (random init: speed
  does not depend on weights); --quick the tiny model, where decoding dominates by design.
- faiss_recall_at_100 / faiss_speedup_vs_exact: the index `build_index` chooses for clustered
  synthetic unit vectors (1M × 512 full, 200k × 128 quick), reloaded memory-mapped, recall@100
  against exact search and queries/s over a FAISS IndexFlatIP over the same vectors.
- ingest_vs_pillow: files/s of the platform's ingest pipeline (curation.ingestion.pipeline
  .ingest_items with its default worker threads: full decode, normalisation, sha256, perceptual
  hash, dedup classification) over a plain Pillow open+verify+open+load loop on the same bytes;
  ingest_validate_vs_pillow is the single-threaded validate_image_bytes on its own. Both arms are
  warmed up first and the best of three interleaved rounds counts.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import curation.retrieval  # noqa: E402, F401  (torchvision shim before open_clip)
from curation.retrieval.clip_models import TINY_CLIP, encode_image_tensors, load_clip  # noqa: E402
from curation.retrieval.embedding import embed_shard, plan_shards, write_shard  # noqa: E402
from curation.retrieval.images import open_image  # noqa: E402
from curation.retrieval.index import build_index, load_index, recall_at_k, search  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def photo_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs (gradient + noise, 320×240 to 480×360) as encoded bytes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = int(rng.integers(320, 481))
        h = w * 3 // 4
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base, slope = rng.uniform(40, 200, 3), rng.uniform(-0.3, 0.3, (3, 2))
        arr = np.stack([base[c] + slope[c, 0] * x + slope[c, 1] * y for c in range(3)], -1)
        arr += rng.normal(0, 12, arr.shape)
        buffer = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def bench_embed(quick: bool, workdir: Path) -> dict[str, float]:
    model_name = TINY_CLIP if quick else "ViT-B-32"
    n, batch = (1024, 64) if quick else (256, 64)
    bundle = load_clip(model_name, None, seed=0)
    images = photo_jpegs(n)
    tensors = torch.stack([bundle.preprocess(open_image(b)) for b in images])
    encode_image_tensors(bundle, tensors[:batch])  # warm-up (allocator, kernels)

    started = time.perf_counter()
    for start in range(0, n, batch):
        encode_image_tensors(bundle, tensors[start : start + batch])
    bare = n / (time.perf_counter() - started)

    spec = plan_shards(range(n), n)[0]
    started = time.perf_counter()
    result = embed_shard(
        spec, bundle, images.__getitem__, workdir / "emb", batch_size=batch, num_workers=2
    )
    pipeline = n / (time.perf_counter() - started)
    assert result.count == n and not result.failures
    log(f"embed {model_name}: bare {bare:.1f} img/s, pipeline {pipeline:.1f} img/s")
    return {
        "embed_model": model_name,
        "embed_bare_images_per_s": round(bare, 2),
        "embed_pipeline_images_per_s": round(pipeline, 2),
        "embed_vs_bare": round(pipeline / bare, 3),
    }


def clustered_shards(
    folder: Path, n: int, dim: int, clusters: int, shard: int, seed: int = 0
) -> np.ndarray:
    """Unit vectors around `clusters` random centres; returns all of them for the baseline."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    everything = np.empty((n, dim), np.float32)
    for s, start in enumerate(range(0, n, shard)):
        m = min(shard, n - start)
        rows = centres[rng.integers(0, clusters, m)]
        rows += np.float32(0.6) * rng.standard_normal((m, dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        everything[start : start + m] = rows
        write_shard(folder, f"shard-{s:05d}", np.arange(start, start + m), rows)
    return everything


def bench_faiss(quick: bool, workdir: Path) -> dict[str, float | str]:
    import faiss

    n, dim, clusters = (200_000, 128, 400) if quick else (1_000_000, 512, 2_000)
    k, n_queries = 100, 1000
    started = time.perf_counter()
    vectors = clustered_shards(workdir / "vectors", n, dim, clusters, 100_000)
    log(f"faiss: {n} × {dim} vectors written in {time.perf_counter() - started:.1f} s")
    built = build_index([workdir / "vectors"], workdir / "index.faiss", k=k, n_queries=n_queries)
    p = built.params
    log(
        f"faiss: built {p.spec} in {p.build_seconds:.1f} s, nprobe {p.nprobe}, "
        f"recall@{k} {p.recall_at_k:.3f}; sweep {p.nprobe_sweep}"
    )

    started = time.perf_counter()
    loaded = load_index(workdir / "index.faiss", mmap=True)
    load_seconds = time.perf_counter() - started
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(n, n_queries, replace=False)]
    queries = queries + np.float32(0.1) * rng.standard_normal(queries.shape, dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    started = time.perf_counter()
    _, truth = exact.search(queries, k)
    exact_qps = n_queries / (time.perf_counter() - started)
    search(loaded, queries[:50], k)  # warm the memory map
    started = time.perf_counter()
    found = search(loaded, queries, k)
    index_qps = n_queries / (time.perf_counter() - started)
    recall = recall_at_k(found.ids, truth)
    log(
        f"faiss: exact {exact_qps:.0f} q/s, index {index_qps:.0f} q/s, recall@{k} {recall:.3f}, "
        f"mmap load {load_seconds * 1000:.1f} ms"
    )
    return {
        "faiss_vectors": n,
        "faiss_dim": dim,
        "faiss_spec": p.spec,
        "faiss_nprobe": p.nprobe,
        "faiss_recall_at_100": round(recall, 4),
        "faiss_recall_at_build": round(p.recall_at_k, 4),
        "faiss_speedup_vs_exact": round(index_qps / exact_qps, 2),
        "faiss_build_s": round(p.build_seconds, 1),
        "faiss_mmap_load_ms": round(load_seconds * 1000, 2),
    }


def bench_ingest(quick: bool) -> dict[str, float | str]:
    try:
        from curation.ingestion.validate import validate_image_bytes
    except ImportError as error:
        log(f"ingest: skipped ({error})")
        return {"ingest_skipped": f"curation.ingestion.validate unavailable: {error}"}
    n = 100 if quick else 400
    files = photo_jpegs(n // 2, seed=2)
    for data in photo_jpegs(n - n // 2, seed=3):  # and PNGs, lossless path
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buffer, "PNG")
        files.append(buffer.getvalue())

    from curation.ingestion.pipeline import ingest_items
    from curation.ingestion.sources import SourceItem

    def pillow_loop() -> None:
        for data in files:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
            with Image.open(io.BytesIO(data)) as image:
                image.load()

    def validate_loop() -> int:
        return sum(
            type(validate_image_bytes(d, f"bench-{i}")).__name__ == "RefusedFile"
            for i, d in enumerate(files)
        )

    def pipeline_run() -> None:
        items = [SourceItem(origin=f"bench-{i}", reader=lambda d=d: d) for i, d in enumerate(files)]
        ingest_items(items, already_seen=set(), on_result=lambda result: None)

    # Warm-up outside the clocks: imagehash imports scipy.fftpack on its first call (~0.5 s),
    # a one-time cost a long ingest pays once, not per file.
    validate_image_bytes(files[0], "warm-up")
    pillow_times, validate_times, pipeline_times = [], [], []
    refused = 0
    for _ in range(3):  # interleaved rounds expose every arm to the same machine load
        started = time.perf_counter()
        pillow_loop()
        pillow_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        refused = validate_loop()
        validate_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        pipeline_run()
        pipeline_times.append(time.perf_counter() - started)
    pillow = n / min(pillow_times)
    validate_rate = n / min(validate_times)
    platform_rate = n / min(pipeline_times)
    log(
        f"ingest: pillow {pillow:.0f} files/s, validate_image_bytes {validate_rate:.0f} files/s, "
        f"ingest pipeline {platform_rate:.0f} files/s"
    )
    return {
        "ingest_pillow_files_per_s": round(pillow, 1),
        "ingest_validate_files_per_s": round(validate_rate, 1),
        "ingest_pipeline_files_per_s": round(platform_rate, 1),
        "ingest_refused": refused,
        "ingest_validate_vs_pillow": round(validate_rate / pillow, 3),
        "ingest_vs_pillow": round(platform_rate / pillow, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, tiny model")
    args = parser.parse_args()
    figures: dict[str, object] = {
        "bench": "retrieval",
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, CPU",
    }
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        workdir = Path(tmp)
        figures.update(bench_embed(args.quick, workdir))
        figures.update(bench_ingest(args.quick))
        figures.update(bench_faiss(args.quick, workdir))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
