"""Synthetic images drawn with PIL: sticker-like cut-outs versus photo-like noise and gradients."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

PALETTE = [
    (230, 57, 70),
    (29, 53, 87),
    (69, 123, 157),
    (244, 162, 97),
    (42, 157, 143),
    (255, 209, 102),
]


def sticker(rng: np.random.Generator, transparent: bool = True) -> Image.Image:
    """Flat shapes with a dark outline, on transparency (or on white when not transparent)."""
    size = int(rng.integers(96, 257))
    background = (0, 0, 0, 0) if transparent else (255, 255, 255, 255)
    image = Image.new("RGBA", (size, size), background)
    draw = ImageDraw.Draw(image)
    margin = size // 8
    box = [margin, margin, size - margin, size - margin]
    fill = PALETTE[int(rng.integers(len(PALETTE)))] + (255,)
    outline = (20, 20, 20, 255)
    if rng.random() < 0.5:
        draw.ellipse(box, fill=fill, outline=outline, width=max(2, size // 24))
    else:
        draw.rounded_rectangle(
            box, radius=size // 6, fill=fill, outline=outline, width=max(2, size // 24)
        )
    inner = PALETTE[int(rng.integers(len(PALETTE)))] + (255,)
    c = size // 2
    r = size // 6
    draw.ellipse([c - r, c - r, c + r, c + r], fill=inner, outline=outline, width=2)
    return image if transparent else image.convert("RGB")


def photo(rng: np.random.Generator) -> Image.Image:
    """A gradient with texture noise running to every edge, at a photo's aspect ratio."""
    width = int(rng.integers(160, 320))
    height = int(width * rng.choice([0.66, 0.75, 1.0, 1.33]))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    slope = rng.uniform(-0.6, 0.6, size=(3, 2))
    channels = [base[c] + slope[c, 0] * x + slope[c, 1] * y for c in range(3)]
    array = np.stack(channels, axis=-1) + rng.normal(0, 18, size=(height, width, 3))
    return Image.fromarray(array.clip(0, 255).astype(np.uint8), "RGB")


def banner(rng: np.random.Generator) -> Image.Image:
    """Flat artwork but 4:1 — the aspect-ratio LF's case."""
    image = Image.new("RGB", (400, 100), (255, 255, 255))
    ImageDraw.Draw(image).rectangle(
        [10, 10, 390, 90], fill=PALETTE[int(rng.integers(len(PALETTE)))]
    )
    return image


def labelled_pool(
    n_stickers: int, n_photos: int, seed: int = 0
) -> tuple[list[Image.Image], np.ndarray]:
    """Stickers (half on transparency, half on white) then photos; labels 1/0."""
    rng = np.random.default_rng(seed)
    images = [sticker(rng, transparent=i % 2 == 0) for i in range(n_stickers)]
    images += [photo(rng) for _ in range(n_photos)]
    return images, np.array([1] * n_stickers + [0] * n_photos)
