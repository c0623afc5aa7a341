"""Synthetic sticker-like datasets (coloured shapes with captions) for tests, demo and bench.

Each role gets its own look so recipes have something to tell apart: `domain` and `alignment`
shapes on varied backgrounds, `style` shapes with a thick dark outline on white. With `rgba`, the
background is transparent, which is what the transparency decoder learns from.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TypedDict

import numpy as np
from PIL import Image, ImageDraw

from training.engine.data import write_manifest

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 30),
}


class _Stroke(TypedDict, total=False):
    outline: tuple[int, int, int, int]
    width: int


def shape_image(
    shape: str,
    colour: str,
    size: int,
    rng: np.random.Generator,
    *,
    outline: bool = False,
    rgba: bool = False,
) -> Image.Image:
    background = (
        (0, 0, 0, 0)
        if rgba
        else (255, 255, 255, 255)
        if outline
        else (*rng.integers(120, 255, 3).tolist(), 255)
    )
    image = Image.new("RGBA", (size, size), tuple(background))
    draw = ImageDraw.Draw(image)
    margin = int(rng.integers(size // 8, size // 4))
    box = (margin, margin, size - margin, size - margin)
    fill = (*COLOURS[colour], 255)
    stroke: _Stroke = {"outline": (20, 20, 20, 255), "width": max(1, size // 16)} if outline else {}
    if shape == "circle":
        draw.ellipse(box, fill=fill, **stroke)
    elif shape == "square":
        draw.rectangle(box, fill=fill, **stroke)
    else:
        draw.polygon(
            [(size // 2, margin), (size - margin, size - margin), (margin, size - margin)],
            fill=fill,
            **stroke,
        )
    return image if rgba else image.convert("RGB")


def write_toy_dataset(
    directory: str | Path,
    role: str,
    count: int,
    seed: int = 0,
    size: int = 32,
    *,
    rgba: bool = False,
) -> dict[str, str]:
    """Write `count` PNGs and a Parquet manifest; returns a `datasets` entry for TrainConfig."""
    directory = Path(directory) / role
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        shape = SHAPES[index % len(SHAPES)]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        image = shape_image(shape, colour, size, rng, outline=role == "style", rgba=rgba)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        relative = f"images/{sha}.png"
        (directory / relative).write_bytes(data)
        suffix = ", sticker, thick outline" if role == "style" else ""
        rows.append(
            {
                "image_sha256": sha,
                "caption": f"a {colour} {shape}{suffix}",
                "label": role,
                "weight": 1.0,
                "split": "train",
                "image_path": relative,
            }
        )
    manifest = directory / "manifest.parquet"
    checksum = write_manifest(manifest, rows)
    return {"manifest": str(manifest), "sha256": checksum, "image_root": str(directory)}
