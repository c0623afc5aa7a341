"""Cheap per-image measurements the labelling functions vote on; no learned weights.

Computed once per image at ingest or recipe time and storable as JSON (a flat dict of floats).
Measurements are taken on a small nearest-neighbour thumbnail: nearest keeps the original
colours (no blending), so palette and flatness reflect the artwork, not the resampler. Thin lines
(a chart's axes and gridlines) are the exception: nearest would drop most one-pixel lines, so
they are found on an area-averaged greyscale copy, where a thin line stays a faint thin line.
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
    "white_fraction",
    "chroma_mean",
    "edge_cells",
    "h_lines",
    "v_lines",
    "opaque_fraction",
)
_THUMB = 128
_LINE_THUMB = 256
_WHITE = 235  # every channel at least this counts as white paper
_EDGE_STEP = 48  # a neighbour difference this large is a strong edge
_EDGE_GRID = 16  # edge_cells: share of a 16 × 16 grid of cells holding a strong edge
_LINE_DARK = 16  # a line pixel is this much darker than white ...
_LINE_CONTRAST = 12  # ... and than the pixels two steps either side of it
_LINE_COVER = 0.5  # a row (column) is a line when that many of its pixels are line pixels
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


def _line_count(dark: np.ndarray) -> int:
    """Thin lines running along axis 1 of a darkness map (0 = white), as runs of line rows."""
    if dark.shape[0] < 5:
        return 0
    centre = dark[2:-2]
    thin = (
        (centre > _LINE_DARK)
        & (centre > dark[:-4] + _LINE_CONTRAST)
        & (centre > dark[4:] + _LINE_CONTRAST)
    )
    rows = thin.mean(axis=1) >= _LINE_COVER
    return int(rows[0]) + int((rows[1:] & ~rows[:-1]).sum()) if len(rows) else 0


def _thin_lines(picture: Image.Image) -> tuple[int, int]:
    """Horizontal and vertical thin lines (axes, gridlines, frames) of an RGB picture."""
    grey = picture.convert("L")
    grey.thumbnail((_LINE_THUMB, _LINE_THUMB), Image.Resampling.BOX)
    dark = 255.0 - np.asarray(grey, dtype=np.float32)
    return _line_count(dark), _line_count(dark.T)


def _edge_cells(rgb: np.ndarray) -> float:
    """Share of grid cells holding a strong edge: outlines touch some, noise touches all."""
    dx = np.abs(np.diff(rgb, axis=1)).max(axis=2) > _EDGE_STEP
    dy = np.abs(np.diff(rgb, axis=0)).max(axis=2) > _EDGE_STEP
    edges = np.zeros(rgb.shape[:2], bool)
    edges[:, :-1] |= dx
    edges[:-1, :] |= dy
    height, width = edges.shape
    rows = np.minimum(np.arange(height) * _EDGE_GRID // max(height, 1), _EDGE_GRID - 1)
    cols = np.minimum(np.arange(width) * _EDGE_GRID // max(width, 1), _EDGE_GRID - 1)
    cells = np.zeros((_EDGE_GRID, _EDGE_GRID), bool)
    ys, xs = np.nonzero(edges)
    cells[rows[ys], cols[xs]] = True
    used = np.zeros_like(cells)
    used[np.ix_(np.unique(rows), np.unique(cols))] = True  # tiny images have fewer cells
    return float(cells[used].mean())


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

    white = (rgb >= _WHITE).all(axis=2)
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    on_white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    h_lines, v_lines = _thin_lines(Image.alpha_composite(on_white, rgba).convert("RGB"))

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
        "white_fraction": float(white.mean()),
        "chroma_mean": float(chroma[~white].mean()) if (~white).any() else nan,
        "edge_cells": _edge_cells(rgb),
        "h_lines": float(h_lines),
        "v_lines": float(v_lines),
        "opaque_fraction": float((alpha == 255).mean()) if has_alpha else nan,
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
