"""Near-duplicate search over 64-bit perceptual hashes by Hamming distance.

Multi-index hashing (Norouzi et al.): each hash is cut into four 16-bit pieces, each piece
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
    """Hashes with keys; `find` returns every key within a Hamming distance, nearest first.

    The band tables are numpy arrays (positions sorted by band value plus bucket offsets), not
    millions of Python lists, so a million entries cost ~25 MB and no garbage-collector time.
    Entries added since the last rebuild sit in a tail that is scanned directly; the tables are
    rebuilt when the tail outgrows an eighth of them, which keeps rebuilds amortised O(n log n).
    """

    def __init__(self, *, brute_force_below: int = 20_000) -> None:
        self._keys: list[str] = []
        self._values: list[int] = []
        self._hashes = np.zeros(1024, dtype=np.uint64)
        self._synced = 0
        self._frozen = 0
        self._members: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        self._brute_force_below = brute_force_below
        self._mask_cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str, phash_hex: str) -> None:
        self._values.append(_parse(phash_hex))
        self._keys.append(key)

    def find(self, phash_hex: str, max_distance: int) -> list[tuple[str, int]]:
        """(key, distance) for every entry within `max_distance`, nearest first, ties in the order
        the entries were added."""
        if max_distance < 0 or not self._keys:
            return []
        value = _parse(phash_hex)
        query = np.uint64(value)
        count = len(self._keys)
        hashes = self._synced_hashes()
        radius = max_distance // _BANDS
        if count < self._brute_force_below or radius > 2:
            distances = np.bitwise_count(hashes[:count] ^ query)
            positions = np.flatnonzero(distances <= max_distance)
            distances = distances[positions]
        else:
            if count - self._frozen > max(self._brute_force_below // 4, self._frozen // 8):
                self._rebuild(count)
            candidates = np.concatenate(
                [self._candidates(value, radius), np.arange(self._frozen, count)]
            )
            distances = np.bitwise_count(hashes[candidates] ^ query)
            close = distances <= max_distance
            # A neighbour close in several bands is found once per band.
            positions, first = np.unique(candidates[close], return_index=True)
            distances = distances[close][first]
        order = np.lexsort((positions, distances))
        return [(self._keys[int(positions[i])], int(distances[i])) for i in order]

    def nearest(self, phash_hex: str, max_distance: int) -> tuple[str, int] | None:
        found = self.find(phash_hex, max_distance)
        return found[0] if found else None

    def items(self) -> Iterator[tuple[str, str]]:
        for key, value in zip(self._keys, self._values, strict=True):
            yield key, f"{value:016x}"

    def _synced_hashes(self) -> np.ndarray:
        count = len(self._values)
        if count > len(self._hashes):
            grown = np.zeros(max(count, 2 * len(self._hashes)), dtype=np.uint64)
            grown[: self._synced] = self._hashes[: self._synced]
            self._hashes = grown
        if count > self._synced:
            self._hashes[self._synced : count] = np.array(
                self._values[self._synced :], dtype=np.uint64
            )
            self._synced = count
        return self._hashes

    def _rebuild(self, count: int) -> None:
        hashes = self._hashes[:count]
        self._members, self._offsets = [], []
        for band in range(_BANDS):
            pieces = ((hashes >> np.uint64(band * _BAND_BITS)) & np.uint64(_BAND_MASK)).astype(
                np.uint16
            )
            self._members.append(np.argsort(pieces, kind="stable"))
            counts = np.bincount(pieces, minlength=_BAND_MASK + 1)
            self._offsets.append(np.concatenate([[0], np.cumsum(counts)]))
        self._frozen = count

    def _candidates(self, value: int, radius: int) -> np.ndarray:
        if not self._frozen:
            return np.zeros(0, dtype=np.int64)
        masks = self._mask_cache.get(radius)
        if masks is None:
            masks = self._mask_cache[radius] = np.array(_flip_masks(radius), dtype=np.int64)
        found = []
        for band in range(_BANDS):
            probes = _band(value, band) ^ masks
            starts = self._offsets[band][probes]
            lengths = self._offsets[band][probes + 1] - starts
            total = int(lengths.sum())
            if total:
                # Concatenate the bucket ranges without a Python loop.
                shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
                found.append(self._members[band][shift + np.arange(total)])
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


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
