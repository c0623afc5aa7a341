"""The sharded embedding pipeline: correct vectors, bad images skipped, atomic and resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import curation.retrieval  # noqa: F401
from curation.retrieval.clip_models import TINY_CLIP, encode_images, load_clip
from curation.retrieval.embedding import (
    EmbeddingCancelled,
    ShardConflictError,
    embed_shard,
    list_shards,
    plan_shards,
    read_shard,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bundle():
    return load_clip(TINY_CLIP, None, seed=0)


def _image(i: int) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 255, (24 + i % 7, 30, 3), dtype=np.uint8))


def test_plan_shards_is_sorted_deduplicated_and_stable() -> None:
    specs = plan_shards([9, 3, 3, 1, 7, 5, 2], shard_size=3, start_index=4)
    assert [s.ids for s in specs] == [(1, 2, 3), (5, 7, 9)]
    assert [s.name for s in specs] == ["shard-00004", "shard-00005"]
    assert specs == plan_shards([1, 2, 3, 5, 7, 9], 3, start_index=4)
    with pytest.raises(ValueError, match="shard_size"):
        plan_shards([1], 0)


def test_shards_hold_the_model_vectors_and_bad_images_are_recorded(tmp_path, bundle) -> None:
    files = {}
    for i in range(12):
        path = tmp_path / f"img{i}.png"
        _image(i).save(path)
        files[i] = path
    (tmp_path / "img4.png").write_bytes(b"not an image at all")
    files[7] = tmp_path / "gone.png"
    sources = {**files, 10: _image(10).convert("RGBA"), 11: (tmp_path / "img11.png").read_bytes()}
    seen = []
    results = [
        embed_shard(
            spec,
            bundle,
            sources.__getitem__,
            tmp_path / "emb",
            batch_size=4,
            num_workers=2,
            progress=lambda done, total: seen.append((done, total)),
        )
        for spec in plan_shards(range(12), 5)
    ]
    failures = {f.image_id: f.reason for r in results for f in r.failures}
    assert failures == {4: "not an image Pillow can read", 7: f"file not found: {files[7]}"}
    assert [r.count for r in results] == [4, 4, 2]
    assert seen[-1] == (2, 2) and (5, 5) in seen

    ids, vectors = zip(*(read_shard(r.path) for r in results), strict=True)
    ids, vectors = np.concatenate(ids), np.concatenate(vectors)
    assert ids.tolist() == [0, 1, 2, 3, 5, 6, 8, 9, 10, 11]
    expected = encode_images(bundle, [_image(i) for i in ids.tolist()])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    meta = json.loads(results[0].path.read_text())
    assert (
        meta["count"] == 4 and meta["dim"] == 32 and meta["weights_sha256"] == bundle.weights_sha256
    )
    assert meta["failures"][0]["image_id"] == 4
    assert list_shards(tmp_path / "emb") == [r.path for r in results]


def test_committed_shard_is_skipped_and_damaged_one_redone(tmp_path, bundle) -> None:
    spec = plan_shards(range(6), 6)[0]
    first = embed_shard(spec, bundle, _image, tmp_path)
    stamp = first.vectors_path.stat().st_mtime_ns
    again = embed_shard(spec, bundle, lambda i: pytest.fail("resume must not decode"), tmp_path)
    assert again.skipped and again.count == 6 and first.vectors_path.stat().st_mtime_ns == stamp

    with open(first.vectors_path, "r+b") as handle:  # flip bytes inside the vectors
        handle.seek(-8, os.SEEK_END)
        handle.write(b"\0" * 8)
    redone = embed_shard(spec, bundle, _image, tmp_path)
    assert not redone.skipped
    np.testing.assert_array_equal(read_shard(redone.path)[1], read_shard(first.path)[1])


def test_cancel_leaves_nothing_visible_and_rerun_completes(tmp_path, bundle) -> None:
    spec = plan_shards(range(8), 8)[0]
    calls = iter([False, True])
    with pytest.raises(EmbeddingCancelled, match="shard-00000"):
        embed_shard(spec, bundle, _image, tmp_path, batch_size=4, should_cancel=lambda: next(calls))
    assert list(tmp_path.iterdir()) == []
    assert embed_shard(spec, bundle, _image, tmp_path).count == 8


def test_shard_of_another_model_is_refused(tmp_path, bundle) -> None:
    spec = plan_shards(range(3), 3)[0]
    embed_shard(spec, bundle, _image, tmp_path)
    other = load_clip(TINY_CLIP, None, seed=1)
    with pytest.raises(ShardConflictError, match="shard-00000.json"):
        embed_shard(spec, other, _image, tmp_path)


@pytest.mark.slow
def test_killed_job_resumes_at_its_last_finished_shard(tmp_path, bundle) -> None:
    """A worker is SIGKILLed inside shard 1: shard 0 stays, shard 1 is invisible, rerun finishes."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from PIL import Image
        import curation.retrieval
        from curation.retrieval.clip_models import load_clip
        from curation.retrieval.embedding import embed_shard, plan_shards

        def load(i):
            if i == 6:
                print("inside shard 1", flush=True)
                sys.stdin.read()  # blocks until the test kills us
            rng = np.random.default_rng(i)
            return Image.fromarray(rng.integers(0, 255, (24 + i % 7, 30, 3), dtype=np.uint8))

        bundle = load_clip("tiny-clip", None, seed=0)
        for spec in plan_shards(range(12), 4):
            embed_shard(spec, bundle, load, {str(tmp_path)!r}, batch_size=2, num_workers=1)
        """
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )
    try:
        assert worker.stdout.readline().strip() == "inside shard 1"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert [p.name for p in list_shards(tmp_path)] == ["shard-00000.json"]
    results = [embed_shard(s, bundle, _image, tmp_path) for s in plan_shards(range(12), 4)]
    assert [r.skipped for r in results] == [True, False, False]
    assert sum(r.count for r in results) == 12
    assert not list(tmp_path.glob(".*.tmp"))
