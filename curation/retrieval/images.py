"""Turning whatever a loader returns (path, bytes, PIL image) into the RGB image CLIP sees."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps

ImageSource = str | Path | bytes | bytearray | memoryview | Image.Image

# Transparent pixels carry arbitrary colours; stickers are shown on white, so CLIP sees them so.
_BACKGROUND = (255, 255, 255)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto white (palette and LA images included)."""
    if image.mode == "RGB":
        return image
    if image.mode in {"RGBA", "LA", "PA"} or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def open_image(source: ImageSource, draft_size: int | None = None) -> Image.Image:
    """Decode fully, apply EXIF orientation and return RGB.

    `draft_size` lets JPEG decode at a reduced scale no smaller than that many pixels, which
    roughly halves decode time when the model only wants a 224 px crop.
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, bytes | bytearray | memoryview):
            image = Image.open(io.BytesIO(bytes(source)))
        else:
            image = Image.open(source)
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()
    image = ImageOps.exif_transpose(image)
    return to_rgb(image)
