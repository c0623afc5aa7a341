"""What is stored (and served to annotators) carries no EXIF, GPS, XMP, comments or text chunks;
the pixels are untouched and the file as supplied is kept apart."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from curation.ingestion.metadata import strip_metadata
from curation.ingestion.validate import ValidatedImage, validate_image_bytes
from tests.curation.ingestion.factories import photo, sticker_rgba

XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description creator="Jane Doe"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def _exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0131] = "secret-app 1.0"  # Software
    exif[0x0112] = orientation
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (52.0, 22.0, 12.5)  # latitude
    gps[3], gps[4] = "E", (4.0, 53.0, 30.0)  # longitude
    return exif


def _with_metadata(fmt: str, orientation: int = 1) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        photo(4, (64, 48)).save(
            buffer, "JPEG", exif=_exif(orientation), comment=b"shot at home", xmp=XMP, quality=90
        )
    elif fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Author", "Jane Doe")
        info.add_itxt("Comment", "at 52.37N 4.89E", zip=True)
        sticker_rgba(5, 48).save(buffer, "PNG", pnginfo=info, exif=_exif())
    else:
        sticker_rgba(6, 48).save(buffer, "WEBP", lossless=True, exif=_exif(), xmp=XMP)
    return buffer.getvalue()


def _metadata_left(data: bytes) -> list[str]:
    image = Image.open(io.BytesIO(data))
    image.load()
    left = [key for key in image.info if key in ("exif", "xmp", "comment", "Author", "Comment")]
    if image.getexif():
        left.append("getexif")
    for needle in (b"Jane Doe", b"PhoneMaker", b"secret-app", b"shot at home"):
        if needle in data:
            left.append(needle.decode())
    return left


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_stored_bytes_have_no_metadata_same_pixels_original_kept(fmt):
    data = _with_metadata(fmt)
    assert _metadata_left(data)  # the fixture really carries metadata
    result = validate_image_bytes(data, f"phone.{fmt.lower()}")
    assert isinstance(result, ValidatedImage), result
    assert _metadata_left(result.data) == []
    assert result.stored_format == fmt  # stripped, not re-encoded
    before = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    after = np.asarray(Image.open(io.BytesIO(result.data)).convert("RGBA"))
    assert np.array_equal(before, after)
    assert result.original == data and result.sha256 != result.stored_sha256


def test_rotated_and_converted_images_are_written_without_metadata():
    rotated = _with_metadata("JPEG", orientation=6)
    result = validate_image_bytes(rotated, "rotated.jpg")
    assert isinstance(result, ValidatedImage)
    assert (result.width, result.height) == (48, 64) and _metadata_left(result.data) == []


def test_files_without_metadata_are_left_as_they_are():
    buffer = io.BytesIO()
    sticker_rgba(7, 40).save(buffer, "PNG")
    clean = buffer.getvalue()
    assert strip_metadata(clean, "PNG") is clean
    result = validate_image_bytes(clean, "clean.png")
    assert isinstance(result, ValidatedImage)
    assert result.data == clean and result.original is None
    assert strip_metadata(b"\xff\xd8 not really", "JPEG") == b"\xff\xd8 not really"
