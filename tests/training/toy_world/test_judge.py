"""The toy CLIP as the demo's annotators read it: a sticker reads as a sticker, a photograph as a
photograph, and an image's own caption ranks above most others. Measured on the world's sample
pool (seeds no training set used): stickers 72 of 72 read as stickers, photographs 0 of 72;
own caption top-3 of 36 for 51 % of photographs and 65 % of stickers at seed 0."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from training.engine.toy_world.judge import ToyJudge

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool(toy_world_small: dict) -> list[tuple[str, bytes, str]]:
    manifest = Path(toy_world_small["pool"])
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        (row["path"].split("/")[0], (manifest.parent / row["path"]).read_bytes(), row["caption"])
        for row in rows
    ]


def test_the_toy_clip_tells_stickers_from_photographs_and_ranks_own_captions_high(
    toy_world_small, pool
):
    judge = ToyJudge(toy_world_small["clip_weights"])
    signals = judge.signals([(data, caption) for _, data, caption in pool])
    looks = [look for look, _, _ in pool]
    stickers = [s.style > 0.5 for s, look in zip(signals, looks, strict=True) if look == "stickers"]
    photos = [s.style > 0.5 for s, look in zip(signals, looks, strict=True) if look == "photos"]
    assert sum(stickers) / len(stickers) >= 0.9
    assert sum(photos) / len(photos) <= 0.1
    # An image's own caption beats most of the 35 others (chance: half of them).
    assert sum(s.alignment for s in signals) / len(signals) > 0.65
    assert all(1 <= s.rank <= 36 for s in signals)
    # The same bytes and prompt read the same.
    assert judge.signals([(pool[0][1], pool[0][2])]) == signals[:1]
