"""`manage.py ingest`, its job and the ingest service on the committed sample pool."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from curation.models import Image, IngestBatch, Job, Refusal
from curation.services import ingest as ingest_service
from curation.services import jobs as job_service
from curation.services.ingest import demo_ingest_pool, run_ingest
from curation.services.storage import read_bytes
from tests.curation.ingest_django.conftest import (
    POOL_COUNTS,
    POOL_FILES,
    ingest_json,
    rgba_sticker,
)


def _assert_pool_rows() -> None:
    """What one complete ingest of the pool leaves, however many runs it took."""
    assert Image.objects.filter(status=Image.Status.OK).count() == POOL_COUNTS["ingested"]
    near = Image.objects.filter(status=Image.Status.DUPLICATE).select_related("duplicate_of")
    assert sorted(Path(i.origin).name for i in near) == [
        "sticker_01_resized.png",
        "sticker_15.png",
    ]
    assert {Path(i.duplicate_of.origin).name for i in near} == {
        "sticker_01.png",
        "sticker_03.png",
    }
    assert all(i.storage_key == "" for i in near)  # recorded, not re-stored
    assert Image.objects.filter(status=Image.Status.OK, has_alpha=True).count() == 15
    assert Refusal.objects.count() == 1


@pytest.mark.django_db
def test_pool_ingest_counts_rows_and_storage(pool):
    summary = ingest_json(str(pool), "--source", "pool")
    assert summary["counts"] == POOL_COUNTS
    assert len(summary["refusals"]) == 1
    refusal = summary["refusals"][0]
    assert refusal["path"] == str(pool.resolve() / "photos" / "broken.jpg")
    assert "JPEG" in refusal["reason"]
    _assert_pool_rows()
    batch = IngestBatch.objects.get(pk=summary["batch"])
    assert batch.status == IngestBatch.Status.DONE
    assert batch.position == batch.total == POOL_FILES
    sticker = Image.objects.get(origin__endswith="stickers/sticker_02.png")
    original = (pool / "stickers" / "sticker_02.png").read_bytes()
    assert read_bytes(sticker.storage_key) == original  # an RGBA PNG is kept byte for byte
    assert sticker.has_alpha and sticker.format == "PNG" and sticker.source.name == "pool"
    photo = Image.objects.get(origin__endswith="photos/photo_00.jpg")
    assert not photo.has_alpha and (photo.width, photo.height) == (96, 96)


@pytest.mark.django_db
def test_rerun_is_idempotent(pool):
    ingest_json(str(pool), "--source", "pool")
    rows = set(Image.objects.values_list("pk", "sha256"))
    again = ingest_json(str(pool), "--source", "pool")
    # Everything stored or recorded is now an exact duplicate; the corrupt file is refused again.
    assert again["counts"] == {
        "ingested": 0,
        "duplicate": POOL_FILES - 1,
        "near_duplicate": 0,
        "quarantined": 1,
    }
    assert set(Image.objects.values_list("pk", "sha256")) == rows
    [first, second] = Refusal.objects.order_by("pk")
    assert len(first.sha256) == 64 and second.sha256 == first.sha256
    assert second.batch_id == again["batch"]
    # Recognised by its bytes, not decoded again, and reported as such.
    assert second.reason.startswith("same bytes as a file refused before: ")
    assert f"(ingest #{first.batch_id}): truncated JPEG" in second.reason


@pytest.mark.django_db
def test_readable_summary_and_argument_errors(pool, tmp_path):
    out = io.StringIO()
    call_command("ingest", str(pool), "--source", "pool", stdout=out)
    text = out.getvalue()
    assert "ingested" in text and " 27" in text and "near-duplicates" in text
    assert "broken.jpg: truncated JPEG" in text
    with pytest.raises(CommandError, match="--source"):
        call_command("ingest", str(pool))
    with pytest.raises(CommandError, match="not valid"):
        call_command("ingest", str(pool), "--source", "has space")
    # A missing path is a refusal naming it, not a crash.
    summary = ingest_json(str(tmp_path / "nope"), "--source", "pool")
    assert summary["refusals"] == [
        {"path": str(tmp_path / "nope"), "reason": "no such file or directory"}
    ]


@pytest.mark.django_db
def test_bad_files_are_refused_with_reasons_and_the_batch_goes_on(tmp_path):
    rgba_sticker(1).save(tmp_path / "good.png")
    (tmp_path / "notes.txt").write_text("shopping list\n")
    buffer = io.BytesIO()
    rgba_sticker(2).convert("RGB").save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:60])
    (tmp_path / "empty.jpg").write_bytes(b"")
    archive_path = tmp_path.parent / f"{tmp_path.name}-evil.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("../escape.png", buffer.getvalue())
        archive.writestr("inside.png", buffer.getvalue())
    # Archives are opened when given as a PATH (inside a folder they are refused as not images).
    summary = ingest_json(str(tmp_path), str(archive_path), "--source", "bad")
    assert summary["counts"]["ingested"] == 2  # good.png and the zip's inside.png
    escape = f"{archive_path}!../escape.png"
    reasons = dict(Refusal.objects.values_list("origin", "reason"))
    assert set(reasons) == {str(tmp_path / n) for n in ("notes.txt", "cut.png", "empty.jpg")} | {
        escape
    }
    assert reasons[str(tmp_path / "notes.txt")] == "not an image: plain text"
    assert reasons[str(tmp_path / "empty.jpg")] == "empty file (0 bytes)"
    assert reasons[str(tmp_path / "cut.png")].startswith("truncated PNG")
    assert "outside" in reasons[escape] or ".." in reasons[escape], reasons[escape]
    assert summary["counts"]["quarantined"] == 4 == len(summary["refusals"])


@pytest.mark.django_db
def test_cancel_then_resume_completes_without_duplicates(pool, monkeypatch):
    monkeypatch.setattr(ingest_service, "COMMIT_EVERY", 3)
    settled: list[int] = []
    batch = run_ingest(
        [pool],
        "pool",
        workers=2,
        on_progress=lambda done, total: settled.append(done),
        should_cancel=lambda: len(settled) >= 12,
    )
    assert batch.status == IngestBatch.Status.CANCELLED
    assert 0 < batch.position < POOL_FILES
    rows_after_cancel = Image.objects.count() + Refusal.objects.count() + batch.duplicates
    assert rows_after_cancel == batch.position  # exactly the settled prefix was kept
    resumed = ingest_json("--resume", str(batch.pk), "--workers", "2")
    assert resumed["counts"] == POOL_COUNTS and resumed["batch"] == batch.pk
    batch.refresh_from_db()
    assert batch.status == IngestBatch.Status.DONE and batch.position == POOL_FILES
    _assert_pool_rows()
    assert run_ingest(None, None, batch=batch) == batch  # a finished batch is left alone


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs in the dying process's favour."""


@pytest.mark.django_db
def test_kill_inside_a_commit_then_resume(pool, monkeypatch):
    monkeypatch.setattr(ingest_service, "COMMIT_EVERY", 4)
    real_store = ingest_service.store_bytes
    calls = {"n": 0}

    def dies_on_tenth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise Killed
        return real_store(*args, **kwargs)

    monkeypatch.setattr(ingest_service, "store_bytes", dies_on_tenth)
    batch = ingest_service.create_batch([pool], "pool")
    with pytest.raises(Killed):
        run_ingest(None, None, batch=batch, workers=0)
    batch.refresh_from_db()
    assert batch.status == IngestBatch.Status.FAILED
    assert batch.position % 4 == 0 and 0 < batch.position < POOL_FILES
    assert Image.objects.count() < 10  # the chunk being committed was rolled back
    monkeypatch.setattr(ingest_service, "store_bytes", real_store)
    batch = run_ingest(None, None, batch=batch, workers=0)
    assert batch.status == IngestBatch.Status.DONE
    assert batch.ingested == POOL_COUNTS["ingested"] and batch.duplicates == 1
    _assert_pool_rows()


@pytest.mark.django_db
def test_async_job_runs_on_cpu_queue_and_resumes_after_cancel(
    pool, monkeypatch, no_dispatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(ingest_service, "COMMIT_EVERY", 2)
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("ingest", str(pool), "--source", "pool", "--async", stdout=out)
    job = Job.objects.get()
    assert out.getvalue().strip() == f"enqueued ingest job {job.pk} (batch #{job.target_id})"
    assert (job.kind, job.queue, no_dispatch) == ("ingest", "cpu", [job.pk])
    batch = IngestBatch.objects.get(pk=job.target_id)
    assert batch.job == job and batch.status == IngestBatch.Status.QUEUED

    # The user cancels while the job runs (the heartbeat thread would set this flag).
    real_save_state = job_service.JobContext.save_state

    def cancel_at_ten(ctx, **values):
        real_save_state(ctx, **values)
        if values.get("position", 0) >= 10:
            ctx._cancel.set()

    monkeypatch.setattr(job_service.JobContext, "save_state", cancel_at_ten)
    job_service.execute_job(job.pk)
    job.refresh_from_db()
    batch.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert batch.status == IngestBatch.Status.CANCELLED
    assert job.state == {"batch_id": batch.pk, "position": batch.position}
    assert 10 <= batch.position < POOL_FILES

    monkeypatch.setattr(job_service.JobContext, "save_state", real_save_state)
    job_service.retry_job(job)
    job_service.execute_job(job.pk)
    job.refresh_from_db()
    batch.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.percent == 100.0
    assert job.result["counts"] == POOL_COUNTS
    assert job.progress_total == POOL_FILES
    assert batch.status == IngestBatch.Status.DONE
    _assert_pool_rows()


@pytest.mark.django_db
def test_admin_batch_page_lists_refusals_and_images_filter(client, data_lead, pool):
    summary = ingest_json(str(pool), "--source", "pool")
    client.force_login(data_lead)
    page = client.get(reverse("admin:curation_ingestbatch_change", args=[summary["batch"]]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "broken.jpg" in html and "truncated JPEG" in html
    assert "27 ingested" in html and "2 near-duplicates" in html
    listing = client.get(reverse("admin:curation_ingestbatch_changelist"))
    assert listing.status_code == 200 and "Done" in listing.content.decode()
    images = client.get(
        reverse("admin:curation_image_changelist"),
        {"has_alpha__exact": "1", "status__exact": "ok", "batch__id__exact": summary["batch"]},
    )
    assert images.status_code == 200
    assert images.content.decode().count("repeating-conic-gradient") == 15
    refusals = client.get(
        reverse("admin:curation_refusal_changelist"), {"batch__id__exact": summary["batch"]}
    )
    assert refusals.status_code == 200 and "broken.jpg" in refusals.content.decode()


@pytest.mark.django_db
def test_demo_ingest_pool_is_idempotent():
    first = demo_ingest_pool()
    assert first.status == IngestBatch.Status.DONE and first.source.name == "demo-pool"
    assert first.ingested == POOL_COUNTS["ingested"]
    count = Image.objects.count()
    assert demo_ingest_pool() == first
    assert Image.objects.count() == count and IngestBatch.objects.count() == 1


@pytest.mark.django_db
def test_tiny_images_skip_near_duplicate_detection_but_not_exact(tmp_path):
    import numpy as np
    from PIL import Image as PILImage

    rng = np.random.default_rng(8)
    archive_path = tmp_path / "tiny.zip"
    seen: set[bytes] = set()
    with zipfile.ZipFile(archive_path, "w") as archive:
        while len(seen) < 1000:
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            if pixels.tobytes() in seen:
                continue
            seen.add(pixels.tobytes())
            buffer = io.BytesIO()
            PILImage.fromarray(pixels, "RGB").save(buffer, "PNG")
            archive.writestr(f"tiny_{len(seen):04d}.png", buffer.getvalue())
        archive.writestr("copy_of_first.png", archive.read("tiny_0001.png"))
    summary = ingest_json(str(archive_path), "--source", "tiny")
    assert summary["counts"] == {
        "ingested": 1000,
        "duplicate": 1,
        "near_duplicate": 0,
        "quarantined": 0,
    }
    assert set(Image.objects.values_list("phash", flat=True)) == {""}


@pytest.mark.django_db
def test_resume_finds_files_by_place_and_content_not_position(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_service, "COMMIT_EVERY", 1)
    for n, name in enumerate(["b.png", "c.png", "d.png", "e.png"]):
        rgba_sticker(40 + n).save(tmp_path / name)
    settled: list[int] = []
    batch = run_ingest(
        [tmp_path],
        "grow",
        workers=0,
        on_progress=lambda done, total: settled.append(done),
        should_cancel=lambda: len(settled) >= 2,
    )
    assert batch.status == IngestBatch.Status.CANCELLED and batch.position == 2
    rgba_sticker(50).save(tmp_path / "a.png")  # sorts before everything settled
    rgba_sticker(51).save(tmp_path / "b.png")  # settled, then replaced by other bytes
    batch = run_ingest(None, None, batch=batch, workers=0)
    assert batch.status == IngestBatch.Status.DONE
    names = sorted(Path(o).name for o in Image.objects.values_list("origin", flat=True))
    assert names == ["a.png", "b.png", "b.png", "c.png", "d.png", "e.png"]
    assert (batch.ingested, batch.duplicates, batch.position) == (6, 0, 6)


@pytest.mark.django_db
def test_a_second_attempt_of_a_batch_counts_and_records_nothing_twice(pool):
    batch = run_ingest([pool], "pool", workers=0)
    counts = ingest_json("--resume", str(batch.pk))["counts"]  # a done batch is left alone
    assert counts == POOL_COUNTS
    # A superseded attempt that wakes up and runs the batch again finds every file recorded.
    IngestBatch.objects.filter(pk=batch.pk).update(status=IngestBatch.Status.RUNNING)
    again = run_ingest(None, None, batch=batch, workers=0)
    assert ingest_json("--resume", str(again.pk))["counts"] == POOL_COUNTS
    assert again.position == POOL_FILES and again.files.count() == POOL_FILES
    _assert_pool_rows()


@pytest.mark.django_db
def test_a_superseded_attempt_commits_nothing_and_the_next_one_finishes(
    pool, monkeypatch, no_dispatch
):
    from datetime import timedelta

    monkeypatch.setattr(ingest_service, "COMMIT_EVERY", 2)
    batch = ingest_service.enqueue_ingest([pool], "pool")
    job = batch.job
    real_save_state = job_service.JobContext.save_state
    superseded: list[int] = []

    def lose_heartbeat_at_ten(ctx, **values):
        real_save_state(ctx, **values)
        if values.get("position", 0) >= 10 and not superseded:
            # The scheduler gives up on this attempt while it keeps running.
            superseded.extend(job_service.recover_lost_jobs(stale_after=timedelta(0)))

    monkeypatch.setattr(job_service.JobContext, "save_state", lose_heartbeat_at_ten)
    job_service.execute_job(job.pk)
    batch.refresh_from_db()
    assert superseded == [job.pk]
    assert 10 <= batch.position < POOL_FILES  # the stale attempt's later commits were refused
    stale_position = batch.position
    monkeypatch.setattr(job_service.JobContext, "save_state", real_save_state)
    job_service.execute_job(job.pk)
    job.refresh_from_db()
    batch.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempt == 2
    assert job.result["counts"] == POOL_COUNTS and batch.position == POOL_FILES > stale_position
    _assert_pool_rows()
