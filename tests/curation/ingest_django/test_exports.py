"""Issue 9 acceptance: an RGBA image ingested, frozen, exported and reloaded keeps its alpha
bit-exactly — in Parquet, image folder + metadata.jsonl and WebDataset form."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from django.core.management import CommandError, call_command
from django.urls import reverse
from PIL import Image as PILImage

from curation.models import Dataset, DatasetVersion, Image, Job
from curation.services import jobs as job_service
from curation.services.exports import ExportError, export_version
from curation.services.ingest import run_ingest
from curation.services.storage import read_bytes
from curation.services.version_images import add_images_to_version
from curation.services.versions import create_draft_version, freeze_version
from tests.curation.ingest_django.conftest import rgba_sticker


def _pixels(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGBA"))


@pytest.fixture
def rgba_pool(tmp_path) -> dict[str, np.ndarray]:
    """Files of several kinds with real transparency, and an opaque photo; name -> RGBA pixels."""
    folder = tmp_path / "pool"
    folder.mkdir()
    rgba_sticker(1).save(folder / "sticker.png")
    rgba_sticker(2).save(folder / "sticker.webp", lossless=True)
    palette = rgba_sticker(3).convert("RGB").quantize(16)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png")
    rgba_sticker(4).convert("RGB").save(folder / "photo.jpg", quality=90)
    return {p.name: _pixels(p.read_bytes()) for p in folder.iterdir()}


def _frozen_rgba_version(rgba_pool, tmp_path) -> DatasetVersion:
    batch = run_ingest([tmp_path / "pool"], "rgba")
    assert batch.ingested == 4 and batch.quarantined == 0
    assert set(Image.objects.filter(has_alpha=True).values_list("format", flat=True)) == {
        "PNG",
        "WEBP",
    }
    version = create_draft_version(Dataset.objects.create(name="alpha", kind="domain"))
    added = add_images_to_version(version, Image.objects.all(), rgba_only=True, label="sticker")
    assert added == 3 and version.lineage == {"filters": {"rgba_only": True}}
    assert add_images_to_version(version, Image.objects.all(), rgba_only=True) == 0
    return freeze_version(version, reason="alpha round trip")


@pytest.mark.django_db
def test_rgba_survives_ingest_freeze_export_and_reload(rgba_pool, tmp_path):
    version = _frozen_rgba_version(rgba_pool, tmp_path)
    expected = {
        image.sha256: rgba_pool[Path(image.origin).name]
        for image in Image.objects.filter(has_alpha=True)
    }
    stored = {i.sha256: read_bytes(i.storage_key) for i in Image.objects.filter(has_alpha=True)}
    # The alpha is not trivial (a flattened copy would fail): every level for the PNG and the
    # WebP, fully transparent and opaque pixels for the palette image.
    levels = sorted(len(np.unique(pixels[..., 3])) for pixels in expected.values())
    assert levels == [2, 256, 256]

    def check(sha256: str, data: bytes) -> None:
        assert data == stored[sha256]  # the stored file itself, never re-encoded
        assert np.array_equal(_pixels(data), expected[sha256])

    out = tmp_path / "exports"
    parquet = export_version(version, "parquet", out / "parquet")
    assert parquet.rows == 3 and parquet.splits == {"train": 3}
    manifest = (out / "parquet" / "manifest.parquet").read_bytes()
    assert hashlib.sha256(manifest).hexdigest() == version.checksum
    table = pq.read_table(out / "parquet" / "data" / "train.parquet")
    assert b"huggingface" in table.schema.metadata
    for row in table.to_pylist():
        assert row["has_alpha"] and row["label"] == "sticker"
        assert row["image"]["path"].startswith(row["image_sha256"])
        check(row["image_sha256"], row["image"]["bytes"])

    export_version(version, "folder", out / "folder")
    lines = (out / "folder" / "train" / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for line in map(json.loads, lines):
        assert line["file_name"].rsplit(".", 1)[1] in {"png", "webp"}
        check(line["image_sha256"], (out / "folder" / "train" / line["file_name"]).read_bytes())

    shards = export_version(version, "webdataset", out / "wds", shard_size=2)
    assert shards.files == ["train-000000.tar", "train-000001.tar"]
    urls = [str(out / "wds" / name) for name in shards.files]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert len(samples) == 3
    for sample in samples:
        meta = json.loads(sample["json"])
        assert meta["image_sha256"] == sample["__key__"]
        data = sample.get("png") or sample.get("webp")
        check(sample["__key__"], data)
    # Same version, same bytes: the shards are reproducible.
    again = export_version(version, "webdataset", out / "wds2", shard_size=2)
    for name in again.files:
        assert (out / "wds2" / name).read_bytes() == (out / "wds" / name).read_bytes()
    summary = json.loads((out / "wds" / "export.json").read_text())
    assert summary["checksum"] == version.checksum and summary["rows"] == 3


@pytest.mark.django_db
def test_splits_command_and_draft_refusal(rgba_pool, tmp_path):
    run_ingest([tmp_path / "pool"], "rgba")
    version = create_draft_version(Dataset.objects.create(name="mixed", kind="domain"))
    assert add_images_to_version(version, Image.objects.filter(has_alpha=True)) == 3
    photos = Image.objects.filter(has_alpha=False)
    assert add_images_to_version(version, photos, split="val", caption="a photo") == 1
    with pytest.raises(ExportError, match="draft"):
        export_version(version, "folder", tmp_path / "x")
    version = freeze_version(version)
    out = io.StringIO()
    call_command(
        "export_version", str(version.pk), "--format", "all", "--out", str(tmp_path / "e"),
        "--json", stdout=out,
    )  # fmt: skip
    results = json.loads(out.getvalue())
    assert set(results) == {"parquet", "folder", "webdataset"}
    assert all(r["splits"] == {"train": 3, "val": 1} for r in results.values())
    assert sorted(results["webdataset"]["files"]) == ["train-000000.tar", "val-000000.tar"]
    val = [
        json.loads(x) for x in (tmp_path / "e/folder/val/metadata.jsonl").read_text().splitlines()
    ]
    assert val[0]["caption"] == "a photo" and val[0]["file_name"].endswith(".jpg")
    with pytest.raises(CommandError, match="unknown|invalid choice"):
        call_command("export_version", str(version.pk), "--format", "tiff", "--out", "x")
    with pytest.raises(CommandError, match="no dataset version"):
        call_command("export_version", "999", "--format", "folder", "--out", "x")


@pytest.mark.django_db
def test_admin_export_action_enqueues_a_job(
    client,
    data_lead,
    rgba_pool,
    tmp_path,
    settings,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    settings.EXPORTS_ROOT = tmp_path / "exports"
    monkeypatch.setattr(job_service, "dispatch", lambda pk, run_after=None: None)
    version = _frozen_rgba_version(rgba_pool, tmp_path)
    draft = create_draft_version(version.dataset, parent=version)
    client.force_login(data_lead)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:curation_datasetversion_changelist"),
            {"action": "export", "_selected_action": [version.pk, draft.pk]},
            follow=True,
        )
    text = response.content.decode()
    assert "export job" in text and "a draft cannot be exported" in text
    job = Job.objects.get(kind="export_version")
    assert job.queue == "cpu" and job.target_id == version.pk
    job_service.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    root = tmp_path / "exports" / "alpha-v1"
    assert set(job.result["exports"]) == {"parquet", "folder", "webdataset"}
    assert (root / "folder" / "train" / "metadata.jsonl").exists()
    assert (root / "webdataset" / "train-000000.tar").exists()
    assert (root / "parquet" / "export.json").exists()

    # The version page links each export as a zip behind a signed URL a browser downloads.
    import re
    import zipfile

    page = client.get(reverse("admin:curation_datasetversion_change", args=[version.pk]))
    links = dict(
        re.findall(
            r'href="([^"]+)" download class="export-download" data-format="(\w+)"',
            page.content.decode(),
        )
    )
    assert sorted(links.values()) == ["folder", "parquet", "webdataset"]
    folder_url = next(url for url, fmt in links.items() if fmt == "folder")
    assert folder_url.startswith("/media/s/")
    download = client.get(folder_url)
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    names = set(archive.namelist())
    assert (
        "alpha-v1/folder/export.json" in names and "alpha-v1/folder/train/metadata.jsonl" in names
    )
    png = next(n for n in names if n.endswith(".png"))
    assert png.startswith("alpha-v1/folder/train/")
    assert archive.read(png) == (root / png.split("/", 1)[1]).read_bytes()
    client.logout()
    assert client.get(folder_url).status_code == 200  # the signed URL is the credential
    assert client.get(folder_url[:-3] + "xyz").status_code == 404
