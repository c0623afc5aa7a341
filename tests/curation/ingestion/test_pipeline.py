"""ingest_items end to end on real files: classification, idempotent re-runs, resume, cancel."""

from __future__ import annotations

import json
import zipfile

import pytest

from curation.ingestion.dedup import NearDuplicateIndex
from curation.ingestion.pipeline import IngestResult, ingest_items
from curation.ingestion.sources import SourceItem, iter_items
from tests.curation.ingestion.factories import encode, photo, sticker_rgba


@pytest.fixture
def pool(tmp_path):
    """A folder with originals, an exact copy, a resized re-encode, junk, and a zip."""
    folder = tmp_path / "pool"
    folder.mkdir()
    original = encode(photo(1, (320, 240)), "JPEG", quality=92)
    (folder / "01_original.jpg").write_bytes(original)
    (folder / "02_copy.jpg").write_bytes(original)
    smaller = photo(1, (320, 240)).resize((200, 150))
    (folder / "03_resized.jpg").write_bytes(encode(smaller, "JPEG", quality=70))
    (folder / "04_other.png").write_bytes(encode(photo(2), "PNG"))
    (folder / "05_sticker.png").write_bytes(encode(sticker_rgba(3), "PNG"))
    (folder / "06_notes.txt").write_bytes(b"not a picture")
    (folder / "07_notes_again.txt").write_bytes(b"not a picture")
    (folder / "08_truncated.jpg").write_bytes(original[: len(original) // 3])
    with zipfile.ZipFile(folder / "09_archive.zip", "w") as archive:
        archive.writestr("inside.png", encode(photo(4), "PNG"))
    return folder


def run(items, *, seen=frozenset(), **options):
    results: list[IngestResult] = []
    summary = ingest_items(items, already_seen=seen, on_result=results.append, **options)
    return summary, {r.origin.rsplit("/", 1)[-1]: r for r in results}, results


def test_each_item_is_classified_and_the_batch_goes_on(pool):
    items = list(iter_items([pool, pool / "09_archive.zip"]))
    summary, by_name, results = run(items, workers=2)
    status = {name: r.status for name, r in by_name.items()}
    assert status == {
        "01_original.jpg": "ingested",
        "02_copy.jpg": "duplicate",
        "03_resized.jpg": "near_duplicate",
        "04_other.png": "ingested",
        "05_sticker.png": "ingested",
        "06_notes.txt": "quarantined",
        "07_notes_again.txt": "quarantined",
        "08_truncated.jpg": "quarantined",
        "09_archive.zip": "quarantined",  # inside a folder an archive is just a file
        "09_archive.zip!inside.png": "ingested",
    }
    original = by_name["01_original.jpg"]
    assert by_name["02_copy.jpg"].duplicate_of == original.sha256
    near = by_name["03_resized.jpg"]
    assert near.duplicate_of == original.sha256 and 0 <= near.distance <= 4
    assert near.image is not None and near.image.width == 200
    assert by_name["05_sticker.png"].image.has_alpha
    assert by_name["06_notes.txt"].reason == "not an image: plain text"
    assert by_name["07_notes_again.txt"].reason.startswith("same bytes as ")
    assert by_name["08_truncated.jpg"].reason.startswith("truncated JPEG")
    assert sorted(r.position for r in results) == list(range(len(items)))

    report = json.loads(json.dumps(summary.to_json()))
    assert report["counts"] == {
        "ingested": 4,
        "duplicate": 1,
        "near_duplicate": 1,
        "quarantined": 4,
    }
    assert {
        "path": str(pool / "08_truncated.jpg"),
        "reason": by_name["08_truncated.jpg"].reason,
    } in (report["refusals"])
    assert report["cancelled"] is False


def test_threads_and_single_thread_decide_the_same(pool):
    items = list(iter_items([pool]))
    _, threaded, _ = run(items, workers=4)
    _, inline, _ = run(items, workers=0)
    assert {k: (r.status, r.duplicate_of) for k, r in threaded.items()} == {
        k: (r.status, r.duplicate_of) for k, r in inline.items()
    }


def test_rerun_with_the_pool_known_is_idempotent(pool):
    items = list(iter_items([pool]))
    first, _, results = run(items)
    stored = {r.sha256 for r in results if r.status in ("ingested", "near_duplicate")}
    second, by_name, _ = run(items, seen=stored)
    assert second.counts["ingested"] == second.counts["near_duplicate"] == 0
    assert second.counts["duplicate"] == first.counts["duplicate"] + len(stored)
    assert second.counts["quarantined"] == first.counts["quarantined"]
    assert by_name["01_original.jpg"].image is None  # known bytes are not decoded again

    calls: list[str] = []
    third, _, _ = run(items, seen=lambda sha: calls.append(sha) or sha in stored)
    assert third.counts == second.counts and len(calls) == len(set(calls))


def test_cancel_mid_batch_then_resume_gives_the_same_pool(pool):
    items = list(iter_items([pool]))
    _, _, full = run(items)
    full_pool = {r.sha256 for r in full if r.status == "ingested"}

    persisted: list[IngestResult] = []
    summary = ingest_items(
        items,
        already_seen=set(),
        on_result=persisted.append,
        should_cancel=lambda: len(persisted) >= 3,
        workers=2,
    )
    assert summary.cancelled and summary.processed == len(persisted) == 3

    known = {r.sha256 for r in persisted if r.status in ("ingested", "near_duplicate")}
    index = NearDuplicateIndex()
    for r in persisted:
        if r.status == "ingested":
            index.add(r.sha256, r.image.phash)
    resumed: list[IngestResult] = []
    ingest_items(items, already_seen=known, on_result=resumed.append, near_index=index)
    pool_after = {r.sha256 for r in persisted + resumed if r.status == "ingested"}
    assert pool_after == full_pool
    assert len(resumed) == len(items)


def test_progress_is_reported_after_each_item(pool):
    items = list(iter_items([pool]))
    progress: list[tuple[int, int | None]] = []
    run(items, on_progress=lambda done, total: progress.append((done, total)))
    assert progress == [(i, len(items)) for i in range(1, len(items) + 1)]
    generator_progress: list[tuple[int, int | None]] = []
    run(iter_items([pool]), on_progress=lambda d, t: generator_progress.append((d, t)))
    assert generator_progress[-1] == (len(items), None)


def test_a_reader_that_raises_anything_is_quarantined(tmp_path):
    def explode() -> bytes:
        raise RuntimeError("disk on fire")

    items = [
        SourceItem("bad", explode),
        SourceItem.refused("refused", "member path contains '..'"),
        SourceItem("good", lambda: encode(sticker_rgba(), "PNG"), caption="a disc"),
    ]
    summary, by_name, _ = run(items, workers=2)
    assert by_name["bad"].reason == "cannot read: RuntimeError: disk on fire"
    assert by_name["refused"].reason == "member path contains '..'"
    assert by_name["good"].status == "ingested" and by_name["good"].caption == "a disc"
    assert summary.counts["quarantined"] == 2


def test_near_duplicates_of_the_existing_pool_are_found_through_the_index(pool):
    index = NearDuplicateIndex()
    from curation.ingestion.validate import validate_image_bytes

    existing = validate_image_bytes((pool / "01_original.jpg").read_bytes(), "db")
    index.add("image-42", existing.phash)
    _, by_name, _ = run(
        [SourceItem("resized", (pool / "03_resized.jpg").read_bytes)], near_index=index
    )
    assert by_name["resized"].status == "near_duplicate"
    assert by_name["resized"].duplicate_of == "image-42"
