"""Shared fixtures: the committed sample pool and RGBA images drawn in the test."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image as PILImage

from tests.conftest import ROOT

POOL = ROOT / "fixtures" / "pool"
# What the committed pool holds: 16 stickers (sticker_15 is a recolour of sticker_03, the same
# shape, so its grayscale perceptual hash is 2 bits away: a near-duplicate), an exact copy, a
# resized near-duplicate, 12 photos and one corrupt JPEG.
POOL_COUNTS = {"ingested": 27, "duplicate": 1, "near_duplicate": 2, "quarantined": 1}
POOL_FILES = 31


def ingest_json(*args: str) -> dict:
    out = io.StringIO()
    call_command("ingest", *args, "--json", stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, out.getvalue()
    return json.loads(lines[0])


def rgba_sticker(seed: int, size: int = 48) -> PILImage.Image:
    """Alpha with every level from 0 to 255 somewhere, so a flattened copy cannot pass."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    alpha = (np.arange(size * size, dtype=np.int64).reshape(size, size) * 7 + seed) % 256
    return PILImage.fromarray(np.dstack([rgb, alpha.astype(np.uint8)]), "RGBA")


@pytest.fixture
def pool() -> Path:
    return POOL
