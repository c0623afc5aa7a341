"""`manage.py strip_media_metadata`: images stored with their metadata before ingest stripped it
are stripped in place, keep their file as supplied apart, and open rounds get fresh links."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image as PILImage

from curation.media import round_url
from curation.models import AnnotationRound, Image, Job
from curation.services.rounds.create import create_round
from curation.services.storage import read_bytes, store_bytes
from tests.curation.ingestion.test_metadata import _metadata_left, _with_metadata

pytestmark = pytest.mark.django_db


def _stored_as_before(data: bytes, ext: str) -> Image:
    """An Image as ingest stored it before item 7: the file as supplied, no original_key."""
    sha = hashlib.sha256(data).hexdigest()
    image = PILImage.open(io.BytesIO(data))
    return Image.objects.create(
        sha256=sha,
        storage_key=store_bytes(data, ext, sha256=sha),
        width=image.width,
        height=image.height,
        format=image.format,
    )


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(data)).convert("RGBA"))


def test_backfill_strips_old_images_keeps_originals_and_reissues_round_links(
    client, capsys, django_capture_on_commit_callbacks
) -> None:
    supplied = {fmt: _with_metadata(fmt) for fmt in ("JPEG", "PNG", "WEBP")}
    old = {fmt: _stored_as_before(data, f".{fmt.lower()}") for fmt, data in supplied.items()}
    clean = _stored_as_before(_clean_png(), ".png")
    round_ = create_round(
        name="open round", kind="alignment", images=[old["JPEG"], clean], gold_rate=0.0, members=[]
    )
    AnnotationRound.objects.filter(pk=round_.pk).update(
        state=AnnotationRound.State.PUSHED, labelstudio_project_id=7
    )
    round_.refresh_from_db()
    old_link = round_url(old["JPEG"].storage_key, round_)
    assert client.get(old_link).status_code == 200  # serving GPS and all, before the backfill

    call_command("strip_media_metadata", "--dry-run")
    assert "would strip 3" in capsys.readouterr().out
    assert all(Image.objects.get(pk=i.pk).original_key == "" for i in old.values())

    with django_capture_on_commit_callbacks(execute=True):
        call_command("strip_media_metadata")
    out = capsys.readouterr().out
    assert "4 images examined: stripped 3 (3 keep their file as supplied), 1 had nothing" in out
    assert f"fresh links (old ones revoked): {round_.pk}" in out
    for fmt, image in old.items():
        image.refresh_from_db()
        served = read_bytes(image.storage_key)
        assert _metadata_left(served) == [], fmt
        assert np.array_equal(_pixels(served), _pixels(supplied[fmt])), fmt
        assert read_bytes(image.original_key) == supplied[fmt]  # no copy: the old key
        assert image.sha256 == hashlib.sha256(supplied[fmt]).hexdigest()  # identity unchanged
    clean.refresh_from_db()
    assert clean.original_key == "" and read_bytes(clean.storage_key) == _clean_png()

    # The link Label Studio held served the unstripped file: revoked, and a refresh job queued.
    assert client.get(old_link).status_code == 404
    assert Job.objects.filter(
        kind="labelstudio.refresh_media", params={"round_id": round_.pk}
    ).exists()

    call_command("strip_media_metadata")
    assert "stripped 0" in capsys.readouterr().out  # idempotent


def test_backfill_reports_an_unreadable_file_and_finishes_the_rest(capsys) -> None:
    gone = Image.objects.create(sha256="0" * 64, storage_key="images/00/00/missing.jpg")
    kept = _stored_as_before(_with_metadata("JPEG"), ".jpg")
    with pytest.raises(CommandError, match="1 images could not be read"):
        call_command("strip_media_metadata")
    captured = capsys.readouterr()
    assert f"image {gone.pk} (images/00/00/missing.jpg)" in captured.err
    kept.refresh_from_db()
    assert kept.original_key and _metadata_left(read_bytes(kept.storage_key)) == []


def _clean_png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 40), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()
