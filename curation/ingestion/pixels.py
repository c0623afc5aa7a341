"""Pixel limits and the exception that carries a refusal's reason, shared by the raster and
SVG decoders (curation.ingestion.validate, curation.ingestion.svg)."""

from __future__ import annotations

import re


class Refused(Exception):
    """Carries a human reason out of the decoding helpers."""


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise Refused(
            f"image is {width}x{height} = {mpx(width * height)}, above the "
            f"{mpx(max_pixels)} limit (possible decompression bomb)"
        )


def bomb_reason(message: str) -> str:
    numbers = [int(n) for n in re.findall(r"\d+", message)]
    if len(numbers) >= 2:
        return (
            f"image is {mpx(numbers[0])}, above Pillow's {mpx(numbers[1])} decompression-bomb limit"
        )
    return f"refused as a possible decompression bomb: {message}"


def mpx(pixels: int) -> str:
    megapixels = pixels / 1_000_000
    return f"{megapixels:.0f} Mpx" if megapixels >= 10 else f"{megapixels:.2g} Mpx"
