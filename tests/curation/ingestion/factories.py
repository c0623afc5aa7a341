"""Small real image files made with Pillow, for ingestion tests (no binary fixtures in git)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(seed: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    """A photo-like RGB image: smooth random colour fields, so resizing keeps its phash while
    two seeds give unrelated hashes (flat images would all hash alike)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    noise = rng.integers(-12, 13, size=(size[1], size[0], 3))
    pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def photo_jpeg(seed: int, size: tuple[int, int] = (256, 192), quality: int = 90) -> bytes:
    return encode(photo(seed, size), "JPEG", quality=quality)


def sticker_rgba(seed: int = 0, size: int = 96) -> Image.Image:
    """A cut-out: an opaque disc with a soft edge on a fully transparent background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    radius = np.hypot(xx - size / 2, yy - size / 2)
    alpha = np.clip((size * 0.4 - radius) * 64, 0, 255).astype(np.uint8)
    rgb = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def png_claiming_size(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims `width`x`height` 1-bit pixels but carries only a
    few bytes of data: what a decompression bomb looks like to a header check."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
