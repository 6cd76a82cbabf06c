"""Near-duplicate search: the LSH search finds what comparing all pairs finds."""

import numpy as np
import pandas as pd
import pytest

from facemask.data.dedup import (
    _near_in_runs,
    _sampled_keys,
    duplicate_groups,
    lsh_plan,
    near_pairs,
    near_pairs_exact,
)


def planted(n: int, copies: int, max_flips: int, seed: int = 0, chains: int = 0):
    """Random 256-bit hashes; `copies` of them get a near copy 0..max_flips bits away, and
    `chains` copies are copied again (groups of three joined through the middle one)."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    rows = rng.permutation(n)
    src, dst = rows[:copies], rows[copies : 2 * copies]
    for s, d in zip(src, dst, strict=True):
        bits[d] = flip(bits[s], rng.integers(0, max_flips + 1), rng)
    for s, d in zip(dst[:chains], rows[2 * copies : 2 * copies + chains], strict=True):
        bits[d] = flip(bits[s], max_flips, rng)  # far from the first, near the middle
    return bits


def flip(row: np.ndarray, k: int, rng) -> np.ndarray:
    b = np.unpackbits(row)
    b[rng.choice(len(b), k, replace=False)] ^= 1
    return np.packbits(b)


def as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.tolist()))


@pytest.mark.parametrize("n, distance", [(3000, 40), (3000, 12), (500, 64)])
def test_lsh_finds_the_same_pairs_as_all_pairs(n, distance):
    bits = planted(n, n // 10, distance, chains=n // 50)
    exact = near_pairs_exact(bits, distance)
    found = near_pairs(bits, distance)
    assert len(exact) >= n // 10  # the planted copies are there to be found
    assert as_set(found) == as_set(exact)
    assert (found[:, 0] < found[:, 1]).all()
    assert np.array_equal(found, found[np.lexsort((found[:, 1], found[:, 0]))])  # sorted


def test_same_groups_as_all_pairs_and_reproducible():
    bits = planted(4000, 300, 40, seed=1, chains=80)
    phash = pd.Series([row.tobytes().hex() for row in bits])
    key = pd.Series([f"sha{i}" for i in range(len(bits))])
    groups = duplicate_groups(key, phash, 40)
    assert groups.max() + 1 == len(bits) - 300 - 80  # each copy joined its source
    assert np.array_equal(groups, duplicate_groups(key, phash, 40))
    # the all-pairs reference gives the same components
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = near_pairs_exact(bits, 40)
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(len(bits),) * 2)
    assert np.array_equal(pd.factorize(connected_components(graph, directed=False)[1])[0], groups)


def test_the_plan_meets_the_miss_probability():
    assert lsh_plan(100, 256, 40) == (0, 1)  # a handful of hashes: all pairs is cheaper
    for n in (10_000, 1_000_000):
        key_bits, tables = lsh_plan(n, 256, 40)
        p = (1 - 40 / 256) ** key_bits
        assert (1 - p) ** tables < 1e-6 <= (1 - p) ** (tables - 1)
        assert 2**key_bits >= n / 4  # few hashes share a key by chance
    assert lsh_plan(10_000, 256, 0) == (12, 1)  # exact copies: one table finds them all


def test_keys_and_bucket_pairs_by_hand():
    bits = np.array([[0b10000000], [0b11000000], [0b10000000], [0b01000000]], np.uint8)
    assert _sampled_keys(bits.T, np.array([0, 1])).tolist() == [2, 3, 2, 1]
    two = np.array([[0b10000000, 0b01000000], [0, 0b01000000], [0b10000000, 0]], np.uint8)
    assert _sampled_keys(two.T, np.array([9, 0])).tolist() == [3, 1, 2]  # bits 0 and 9
    keys = np.array([5, 7, 5, 5, 7, 1], np.uint64)
    rows = np.array([[0], [0b11110000], [0b00000001], [0b11111111], [0b11110001], [0]], np.uint8)
    order = np.argsort(keys, kind="stable")

    def near(distance):
        return as_set(_near_in_runs(keys[order], rows[order], order, distance))

    # only rows that share a key are compared (rows 0 and 5 are equal, keys 5 and 1)
    assert near(2) == {(0, 2), (1, 4)}
    assert near(8) == {(0, 2), (0, 3), (2, 3), (1, 4)}


def test_every_bit_may_differ_and_tiny_inputs():
    bits = planted(40, 5, 8)
    every = {(i, j) for i in range(40) for j in range(i + 1, 40)}
    assert as_set(near_pairs(bits, 256)) == as_set(near_pairs(bits, 300)) == every
    assert lsh_plan(10_000, 16, 40) == (0, 1)  # wider than the hash (odd or even key bits)
    assert lsh_plan(10_000, 256, 250) == (0, 1)  # all pairs is cheaper than ~1e30 tables
    assert near_pairs(bits[:1], 10).shape == (0, 2)
    assert as_set(near_pairs(bits, 8)) == as_set(near_pairs_exact(bits, 8))
