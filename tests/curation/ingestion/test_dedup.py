"""Multi-index hashing must find exactly what a brute-force scan finds."""

from __future__ import annotations

import numpy as np
import pytest

from curation.ingestion.dedup import NearDuplicateIndex, hamming_distance


def random_hashes(count: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.integers(0, 2**64, size=count, dtype=np.uint64)]


def flip(value: int, bits: int, rng: np.random.Generator) -> int:
    for bit in rng.choice(64, size=bits, replace=False):
        value ^= 1 << int(bit)
    return value


def test_hamming_distance():
    assert hamming_distance("0000000000000000", "000000000000000f") == 4
    assert hamming_distance("ffffffffffffffff", "0000000000000000") == 64


@pytest.mark.parametrize("max_distance", [0, 3, 4, 8, 11])
def test_multi_index_search_equals_brute_force(max_distance):
    rng = np.random.default_rng(max_distance)
    base = random_hashes(3000, seed=1)
    planted = [flip(base[i], int(rng.integers(0, 13)), rng) for i in range(0, 3000, 10)]
    indexed = NearDuplicateIndex(brute_force_below=0)  # always use the band tables
    scanned = NearDuplicateIndex(brute_force_below=10**9)  # always scan
    for key, value in enumerate(base):
        indexed.add(str(key), f"{value:016x}")
        scanned.add(str(key), f"{value:016x}")
    total = 0
    for query in planted + random_hashes(50, seed=2):
        expected = scanned.find(f"{query:016x}", max_distance)
        assert indexed.find(f"{query:016x}", max_distance) == expected
        assert all(
            hamming_distance(f"{query:016x}", f"{base[int(k)]:016x}") == d for k, d in expected
        )
        total += len(expected)
    assert total >= len(planted) * min(max_distance, 12) / 13  # planted neighbours were found


def test_results_are_nearest_first_with_ties_in_insertion_order():
    index = NearDuplicateIndex()
    index.add("far", "00000000000000ff")
    index.add("near-b", "0000000000000001")
    index.add("exact", "0000000000000000")
    index.add("near-a", "0000000000000002")
    assert index.find("0000000000000000", 8) == [
        ("exact", 0),
        ("near-b", 1),
        ("near-a", 1),
        ("far", 8),
    ]
    assert index.nearest("0000000000000000", 0) == ("exact", 0)
    assert index.find("ffffffffffffffff", 3) == []
    assert len(index) == 4 and dict(index.items())["far"] == "00000000000000ff"


def test_bad_hashes_are_rejected_with_the_value_named():
    index = NearDuplicateIndex()
    with pytest.raises(ValueError, match="'xyz' is not hexadecimal"):
        index.add("k", "xyz")
    with pytest.raises(ValueError, match="longer than 64 bits"):
        index.add("k", "1" * 17)


def test_entries_added_after_the_tables_were_built_are_found():
    rng = np.random.default_rng(5)
    indexed = NearDuplicateIndex(brute_force_below=0)
    scanned = NearDuplicateIndex(brute_force_below=10**9)
    for round_number in range(6):  # interleave adds and finds: tail, rebuilds, tail again
        for value in random_hashes(700, seed=10 + round_number):
            indexed.add(f"{value:x}", f"{value:016x}")
            scanned.add(f"{value:x}", f"{value:016x}")
        for key, hex_value in list(scanned.items())[-50:]:
            query = f"{flip(int(hex_value, 16), 5, rng):016x}"
            assert indexed.find(query, 7) == scanned.find(query, 7)
            assert (key, 5) in indexed.find(query, 7)
