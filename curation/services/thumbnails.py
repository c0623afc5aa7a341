"""Cached thumbnails for grids: made once per image and size, stored content-addressed.

The key derives from the image's sha256 and the size, so a thumbnail is written once and every
later page view only checks that it exists. PNG keeps transparency, which the grid shows on a
checkerboard. An image whose bytes cannot be decoded falls back to its original key.
"""

from __future__ import annotations

import io

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from curation.models import Image
from curation.services.storage import content_key, read_bytes

THUMBNAIL_SIZE = 256


def thumbnail_key(image: Image, size: int = THUMBNAIL_SIZE) -> str:
    """Storage key of the image's thumbnail, creating it on first use."""
    if not image.storage_key:
        return ""
    key = content_key(image.sha256, "png", prefix=f"thumbnails/{size}")
    if default_storage.exists(key):
        return key
    try:
        picture = PILImage.open(io.BytesIO(read_bytes(image.storage_key)))
        picture.load()
    except Exception:  # the grid still shows the original (or a broken-image icon)
        return image.storage_key
    if max(picture.size) <= size:
        return image.storage_key  # already small: no second copy
    picture.thumbnail((size, size), PILImage.Resampling.LANCZOS)
    if picture.mode not in ("RGB", "RGBA", "L", "LA"):
        picture = picture.convert("RGBA")
    out = io.BytesIO()
    picture.save(out, "PNG", optimize=True)
    saved = default_storage.save(key, ContentFile(out.getvalue()))
    if saved != key:  # another request made it meanwhile; keep theirs, identical content
        default_storage.delete(saved)
    return key
