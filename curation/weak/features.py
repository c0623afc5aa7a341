"""Cheap per-image measurements the labelling functions vote on; no learned weights.

Computed once per image at ingest or recipe time and storable as JSON (a flat dict of floats).
Measurements are taken on a small nearest-neighbour thumbnail: nearest keeps the original
colours (no blending), so palette and flatness reflect the artwork, not the resampler.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps

FEATURE_NAMES = (
    "width",
    "height",
    "has_alpha",
    "transparent_fraction",
    "border_transparent_fraction",
    "border_uniformity",
    "colours_90",
    "flat_fraction",
)
_THUMB = 128
_TRANSPARENT = 16  # alpha below this counts as see-through
_BORDER_TOLERANCE = 24  # max channel difference to the dominant border colour
_FLAT_STEP = 6  # max channel difference to a neighbour for a pixel to count as flat
_COVER = 0.9


def _dominant_share(pixels: np.ndarray) -> float:
    """Share of pixels within tolerance of the most common (coarsely quantised) colour."""
    if not len(pixels):
        return 0.0
    coarse = (pixels // 16).astype(np.int32)
    keys = coarse[:, 0] * 256 + coarse[:, 1] * 16 + coarse[:, 2]
    values, counts = np.unique(keys, return_counts=True)
    top = values[np.argmax(counts)]
    centre = pixels[keys == top].mean(axis=0)
    return float((np.abs(pixels - centre).max(axis=1) <= _BORDER_TOLERANCE).mean())


def extract_features(image: Image.Image) -> dict[str, float]:
    """Measurements of one decoded image (any mode); NaN where a measure does not apply."""
    width, height = image.size
    image = ImageOps.exif_transpose(image)
    has_alpha = image.mode in {"RGBA", "LA", "PA"} or "transparency" in image.info
    rgba = image.convert("RGBA") if has_alpha else image.convert("RGB").convert("RGBA")
    thumb = rgba.copy()
    thumb.thumbnail((_THUMB, _THUMB), Image.Resampling.NEAREST)
    array = np.asarray(thumb, dtype=np.int16)
    alpha = array[..., 3]
    # Transparent pixels show as white, as a sticker on a page would.
    see_through = alpha < _TRANSPARENT
    rgb = np.where(see_through[..., None], np.int16(255), array[..., :3])
    border_mask = np.zeros(alpha.shape, bool)
    border_mask[[0, -1], :] = True
    border_mask[:, [0, -1]] = True

    quantised = (rgb // 16).astype(np.int32)
    keys = (quantised[..., 0] * 256 + quantised[..., 1] * 16 + quantised[..., 2]).ravel()
    counts = np.sort(np.bincount(keys, minlength=4096))[::-1]
    colours_90 = int(np.searchsorted(np.cumsum(counts), _COVER * keys.size) + 1)

    dx = np.abs(np.diff(rgb, axis=1)).max(axis=2)
    dy = np.abs(np.diff(rgb, axis=0)).max(axis=2)
    flat = np.ones(alpha.shape, bool)
    flat[:, :-1] &= dx <= _FLAT_STEP
    flat[:-1, :] &= dy <= _FLAT_STEP

    nan = float("nan")
    return {
        "width": float(width),
        "height": float(height),
        "has_alpha": float(has_alpha),
        "transparent_fraction": float(see_through.mean()) if has_alpha else nan,
        "border_transparent_fraction": float(see_through[border_mask].mean()) if has_alpha else nan,
        "border_uniformity": _dominant_share(rgb[border_mask].reshape(-1, 3)),
        "colours_90": float(colours_90),
        "flat_fraction": float(flat.mean()),
    }


def feature_table(
    rows: Sequence[Mapping[str, float] | None], extra_columns: Iterable[str] = ()
) -> dict[str, np.ndarray]:
    """Columns of float64 (NaN where a row lacks a value) from per-image feature dicts."""
    names = dict.fromkeys([*FEATURE_NAMES, *extra_columns])
    for row in rows:
        if row:
            names.update(dict.fromkeys(row))
    table = {name: np.full(len(rows), np.nan) for name in names}
    for position, row in enumerate(rows):
        if not row:
            continue
        for key, value in row.items():
            table[key][position] = np.nan if value is None else float(value)
    return table
