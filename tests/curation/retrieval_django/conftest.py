"""A small stored pool (flat stickers on transparency, noisy photos) and per-test var folders."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from PIL import Image as PILImage
from PIL import ImageDraw

from curation.models import Image, Source
from curation.services.storage import store_bytes

COLOURS = [(239, 71, 111), (255, 209, 102), (6, 214, 160), (17, 138, 178), (131, 56, 236)]


def sticker_png(seed: int, size: int = 64) -> bytes:
    # Distinct by construction (seed → inset and colour), so no two share a sha256.
    image = PILImage.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    m = 6 + seed % 20
    colour = COLOURS[seed % len(COLOURS)]
    draw.ellipse([m - 4, m - 4, size - m + 4, size - m + 4], fill=(255, 255, 255, 255))
    draw.ellipse([m, m, size - m, size - m], fill=(*colour, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def photo_jpeg(seed: int, size: int = 64) -> bytes:
    rng = random.Random(seed)
    pixels = bytes(rng.randrange(256) for _ in range(size * size * 3))
    image = PILImage.frombytes("RGB", (size, size), pixels)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def store_image(data: bytes, *, source: Source, has_alpha: bool, origin: str = "") -> Image:
    digest = hashlib.sha256(data).hexdigest()
    ext = "png" if has_alpha else "jpg"
    picture = PILImage.open(io.BytesIO(data))
    return Image.objects.create(
        sha256=digest,
        width=picture.width,
        height=picture.height,
        format=picture.format,
        has_alpha=has_alpha,
        storage_key=store_bytes(data, ext, sha256=digest),
        source=source,
        origin=origin or f"{source.name}/{digest[:8]}.{ext}",
    )


@pytest.fixture(autouse=True)
def var_dirs(settings, tmp_path):
    # Jobs here run inside the test's transaction; the heartbeat thread must not touch the db.
    settings.JOB_HEARTBEAT_SECONDS = 600
    settings.EMBEDDINGS_ROOT = tmp_path / "embeddings"
    settings.INDEXES_ROOT = tmp_path / "indexes"
    return tmp_path


@pytest.fixture
def pool(db) -> dict[str, list[Image]]:
    """10 stickers (source `stickers`) and 10 photos (source `photos`), ids interleaved."""
    stickers_source = Source.objects.create(name="stickers")
    photos_source = Source.objects.create(name="photos")
    stickers, photos = [], []
    for n in range(10):
        stickers.append(store_image(sticker_png(n), source=stickers_source, has_alpha=True))
        photos.append(store_image(photo_jpeg(n), source=photos_source, has_alpha=False))
    return {"stickers": stickers, "photos": photos, "all": stickers + photos}
