"""Starting an ingest from the admin: upload an archive or name a folder inside INGEST_ROOTS,
then follow the batch page (progress, counts, refused files) until the job is done."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from curation.models import Image, IngestBatch, Job
from curation.services import jobs as job_service
from tests.curation.ingest_django.conftest import rgba_sticker

pytestmark = pytest.mark.django_db


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    rgba_sticker(seed).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.png", _png(1))
        archive.writestr("b.png", _png(2))
        archive.writestr("broken.png", b"\x89PNG not really")
    return buffer.getvalue()


def test_upload_an_archive_and_follow_the_batch(
    client, data_lead, annotator, no_dispatch, django_capture_on_commit_callbacks
):
    url = reverse("admin:curation_ingestbatch_start")
    client.force_login(annotator)
    assert client.get(url).status_code == 302  # not staff: the login page
    client.force_login(data_lead)
    listing = client.get(reverse("admin:curation_ingestbatch_changelist")).content.decode()
    assert url in listing and "Start an ingest" in listing
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url,
            {"source": "uploaded", "upload": SimpleUploadedFile("pool.zip", _zip())},
        )
    batch = IngestBatch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:curation_ingestbatch_change", args=[batch.pk])
    assert batch.source.name == "uploaded" and batch.created_by == data_lead
    page = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' in page  # queued: the page reloads itself

    job_service.execute_job(batch.job_id)
    batch.refresh_from_db()
    assert batch.job.status == Job.Status.SUCCEEDED, batch.job.error
    assert batch.ingested == 2 and batch.quarantined == 1
    page = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' not in page
    assert "2 ingested" in page and "pool.zip!broken.png" in page
    assert Image.objects.count() == 2


def test_folder_inside_a_root_and_refusals(client, data_lead, tmp_path, settings, no_dispatch):
    root = tmp_path / "roots" / "incoming"
    (root / "week1").mkdir(parents=True)
    rgba_sticker(3).save(root / "week1" / "c.png")
    outside = tmp_path / "secret"
    outside.mkdir()
    settings.INGEST_ROOTS = [str(root)]
    url = reverse("admin:curation_ingestbatch_start")
    client.force_login(data_lead)

    for data, expected in (
        ({"source": "s", "folder": str(outside)}, "is outside the ingest roots"),
        ({"source": "s", "folder": "../../secret"}, "is outside the ingest roots"),
        ({"source": "s", "folder": "week9"}, "does not exist"),
        ({"source": "s"}, "give exactly one of the two"),
        (
            {"source": "s", "folder": "week1", "upload": SimpleUploadedFile("x.zip", _zip())},
            "give exactly one of the two",
        ),
        ({"source": "s", "upload": SimpleUploadedFile("notes.txt", b"hi")}, "not an archive"),
    ):
        page = client.post(url, data)
        assert page.status_code == 200 and expected in page.content.decode(), data
    assert not IngestBatch.objects.exists()

    response = client.post(url, {"source": "weekly", "folder": "week1"})
    assert response.status_code == 302
    batch = IngestBatch.objects.get()
    assert batch.paths == [str((root / "week1").resolve())]

    settings.INGEST_ROOTS = []
    page = client.post(url, {"source": "s", "folder": "week1"}).content.decode()
    assert "no INGEST_ROOTS are configured" in page
