"""Near-duplicate search over 64-bit perceptual hashes by Hamming distance.

Multi-index hashing (Norouzi et al.): each hash is cut into `bands` 16-bit pieces, each piece
indexed in its own table. If two hashes differ in at most d bits, one of the bands differs in at
most floor(d / bands) bits (pigeonhole), so probing every band value within that radius finds
every true neighbour; candidates are then checked exactly with a vectorised popcount. Below
`brute_force_below` entries a single numpy scan is faster than probing and is used instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations

import numpy as np

_BAND_BITS = 16
_BANDS = 64 // _BAND_BITS
_BAND_MASK = (1 << _BAND_BITS) - 1


def hamming_distance(a: str, b: str) -> int:
    """Bits that differ between two hex phash strings."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _flip_masks(radius: int) -> list[int]:
    masks = [0]
    for r in range(1, radius + 1):
        masks.extend(sum(1 << bit for bit in bits) for bits in combinations(range(_BAND_BITS), r))
    return masks


class NearDuplicateIndex:
    """Hashes with keys; `find` returns every key within a Hamming distance, nearest first."""

    def __init__(self, *, brute_force_below: int = 20_000) -> None:
        self._keys: list[str] = []
        self._hashes = np.zeros(1024, dtype=np.uint64)
        self._tables: list[dict[int, list[int]]] = [{} for _ in range(_BANDS)]
        self._brute_force_below = brute_force_below
        self._mask_cache: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str, phash_hex: str) -> None:
        value = _parse(phash_hex)
        position = len(self._keys)
        if position == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
        self._hashes[position] = value
        self._keys.append(key)
        for band, table in enumerate(self._tables):
            table.setdefault(_band(value, band), []).append(position)

    def find(self, phash_hex: str, max_distance: int) -> list[tuple[str, int]]:
        """(key, distance) for every entry within `max_distance`, nearest first, ties in the order
        the entries were added."""
        if max_distance < 0 or not self._keys:
            return []
        value = _parse(phash_hex)
        count = len(self._keys)
        if count < self._brute_force_below or max_distance // _BANDS > 2:
            positions = np.arange(count)
        else:
            positions = self._candidates(value, max_distance)
            if positions.size == 0:
                return []
        distances = np.bitwise_count(self._hashes[positions] ^ np.uint64(value))
        close = distances <= max_distance
        positions, distances = positions[close], distances[close]
        order = np.lexsort((positions, distances))
        return [(self._keys[int(positions[i])], int(distances[i])) for i in order]

    def nearest(self, phash_hex: str, max_distance: int) -> tuple[str, int] | None:
        found = self.find(phash_hex, max_distance)
        return found[0] if found else None

    def _candidates(self, value: int, max_distance: int) -> np.ndarray:
        radius = max_distance // _BANDS
        masks = self._mask_cache.get(radius)
        if masks is None:
            masks = self._mask_cache[radius] = _flip_masks(radius)
        found: list[int] = []
        for band, table in enumerate(self._tables):
            piece = _band(value, band)
            for mask in masks:
                bucket = table.get(piece ^ mask)
                if bucket:
                    found.extend(bucket)
        return np.unique(np.fromiter(found, dtype=np.int64, count=len(found)))

    def items(self) -> Iterator[tuple[str, str]]:
        for position, key in enumerate(self._keys):
            yield key, f"{int(self._hashes[position]):016x}"


def _band(value: int, band: int) -> int:
    return (value >> (band * _BAND_BITS)) & _BAND_MASK


def _parse(phash_hex: str) -> int:
    try:
        value = int(phash_hex, 16)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"perceptual hash {phash_hex!r} is not hexadecimal") from exc
    if value >> 64:
        raise ValueError(f"perceptual hash {phash_hex!r} is longer than 64 bits")
    return value
