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


def chart(rng: np.random.Generator) -> Image.Image:
    """A matplotlib-style plot: white figure, black frame, grey gridlines, a curve, tick text."""
    width, height = int(rng.integers(480, 900)), int(rng.integers(360, 640))
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, top = int(width * 0.12), int(height * 0.1)
    right, bottom = int(width * 0.92), int(height * 0.85)
    for k in range(1, int(rng.integers(1, 7))):  # gridlines (none: matplotlib's default)
        y = top + (bottom - top) * k // 6
        x = left + (right - left) * k // 6
        draw.line([left, y, right, y], fill=(176, 176, 176), width=1)
        draw.line([x, top, x, bottom], fill=(176, 176, 176), width=1)
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0), width=1)
    xs = np.linspace(left, right, 60)
    ys = (top + bottom) / 2 + (bottom - top) * 0.35 * np.sin(xs / rng.uniform(20, 60))
    colour = PALETTE[int(rng.integers(len(PALETTE)))]
    draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=2)
    for k in range(6):
        draw.text((left + (right - left) * k // 5 - 6, bottom + 6), f"{k * 20}", fill=(0, 0, 0))
        draw.text((left - 28, bottom - (bottom - top) * k // 5 - 5), f"{k}.0", fill=(0, 0, 0))
    return image


def greyscale_crop(rng: np.random.Generator) -> Image.Image:
    """A small micrograph-like crop: smooth grey blobs with grain, to every edge, no colour."""
    size = int(rng.integers(96, 200))
    coarse = rng.uniform(40, 220, size=(6, 6)).astype(np.uint8)
    blobs = np.asarray(
        Image.fromarray(coarse, "L").resize((size, size), Image.Resampling.BICUBIC), np.float32
    )
    grain = rng.normal(0, 6, size=(size, size))
    return Image.fromarray((blobs + grain).clip(0, 255).astype(np.uint8), "L")


def noise_texture(rng: np.random.Generator) -> Image.Image:
    """Colour noise: per-pixel or in small blocks, with a limited palette or none."""
    size = int(rng.integers(128, 320))
    block = int(rng.choice([1, 2, 4, 8]))
    cells = -(-size // block)
    if rng.random() < 0.5:
        noise = rng.integers(0, 256, size=(cells, cells, 3))
    else:  # few colours, so palette LFs are fooled
        colours = np.array(PALETTE[:4])
        noise = colours[rng.integers(0, 4, size=(cells, cells))]
    array = np.kron(noise, np.ones((block, block, 1)))[:size, :size]
    return Image.fromarray(array.astype(np.uint8), "RGB")


def opaque_rgba(rng: np.random.Generator) -> Image.Image:
    """A photo (or flat artwork) saved with an alpha channel that is opaque everywhere."""
    base = photo(rng) if rng.random() < 0.5 else banner(rng).resize((256, 256))
    return base.convert("RGBA")


def emoji(rng: np.random.Generator, transparent: bool = True) -> Image.Image:
    """A colour emoji face: a yellow disc, eyes and a mouth, on transparency or white."""
    size = int(rng.integers(72, 200))
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0) if transparent else (255, 255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse([2, 2, size - 3, size - 3], fill=(255, 204, 77, 255), outline=(200, 140, 20, 255))
    eye = size // 10
    for cx in (size // 3, 2 * size // 3):
        draw.ellipse([cx - eye, size // 3, cx + eye, size // 3 + 2 * eye], fill=(60, 40, 20, 255))
    draw.arc(
        [size // 4, size // 3, 3 * size // 4, 3 * size // 4],
        20,
        160,
        fill=(60, 40, 20, 255),
        width=max(2, size // 24),
    )
    return image if transparent else image.convert("RGB")


def tango_icon(rng: np.random.Generator) -> Image.Image:
    """A Tango-style icon: a gradient-filled rounded shape, dark outline, highlight, on alpha."""
    size = int(rng.choice([48, 64, 128, 256]))
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    top = np.array(PALETTE[int(rng.integers(len(PALETTE)))], np.float32)
    bottom = top * 0.6
    shade = np.linspace(0, 1, size)[:, None, None]
    gradient = (top * (1 - shade) + bottom * shade).repeat(size, axis=1)
    fill = Image.fromarray(
        np.concatenate([gradient, np.full((size, size, 1), 255.0)], 2).astype(np.uint8), "RGBA"
    )
    mask = Image.new("L", (size, size), 0)
    margin = size // 8
    ImageDraw.Draw(mask).rounded_rectangle(
        [margin, margin, size - margin, size - margin], radius=size // 5, fill=255
    )
    image.paste(fill, (0, 0), mask)
    ImageDraw.Draw(image).rounded_rectangle(
        [margin, margin, size - margin, size - margin],
        radius=size // 5,
        outline=(46, 52, 54, 255),
        width=max(1, size // 32),
    )
    return image
