"""Exact and near-duplicate groups, so that no copy of a test image is trained on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def hex_to_bits(hashes: pd.Series) -> np.ndarray:
    """Hex perceptual hashes -> packed uint8 rows (one row per hash)."""
    return np.stack([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in hashes])


# Near-pair search by bit-sampling LSH (Indyk-Motwani): a table keys every hash on a random
# sample of its bits; a pair within the distance shares a key with probability
# (1 - distance/bits) ** key_bits, and enough tables make missing it less likely than
# MISS_PROBABILITY. Only pairs sharing a key are compared. With key bits ~ log2(N) the tables
# grow like N ** 0.245 at distance 40 of 256 bits, so the work grows like N ** 1.245 at best
# (benchmarks/dedup_scale.py measures it) against N ** 2 for comparing all pairs.
MISS_PROBABILITY = 1e-6  # per near pair: the chance that no table brings it together
BUCKET = 4  # hashes expected per key by chance: sets the key bits from N (measured best)
SEED = 0  # the sampled bits are fixed, so the groups are reproducible


def lsh_plan(
    n: int, n_bits: int, max_distance: int, miss: float = MISS_PROBABILITY
) -> tuple[int, int]:
    """(key bits, tables) so that a pair `max_distance` apart is missed with chance < `miss`;
    (0, 1) when every bit may differ (every pair is a candidate: compare all)."""
    if max_distance >= n_bits:
        return 0, 1
    key_bits = int(np.clip(np.ceil(np.log2(max(n, 2) / BUCKET)), 1, min(n_bits, 62)))
    p = (1 - max(max_distance, 0) / n_bits) ** key_bits  # one table brings the pair together
    if p >= 1:
        return key_bits, 1
    tables = max(1, int(np.ceil(np.log(miss) / np.log1p(-p))))
    if tables > n / (2 * BUCKET):  # a distance so wide that comparing all pairs is cheaper
        return 0, 1
    return key_bits, tables


def near_pairs(bits: np.ndarray, max_distance: int, miss: float = MISS_PROBABILITY) -> np.ndarray:
    """Index pairs (i < j) whose hashes differ in at most `max_distance` bits, sorted.

    Every pair returned is checked exactly; a near pair is missed with chance < `miss`
    (`near_pairs_exact` compares all pairs). Memory: a few copies of the hashes.
    """
    n, n_bits = len(bits), bits.shape[1] * 8
    key_bits, tables = lsh_plan(n, n_bits, max_distance, miss)
    if n < 2 or key_bits == 0 or n <= 2 * BUCKET:
        return near_pairs_exact(bits, max_distance)
    rng = np.random.default_rng(SEED)
    words = _as_words(bits)
    columns = np.ascontiguousarray(bits.T)  # a byte of every hash in a row: keys read few rows
    found = []
    for _ in range(tables):
        keys = _sampled_keys(columns, rng.choice(n_bits, key_bits, replace=False))
        order = np.argsort(keys)  # any order within a key will do: SIMD quicksort, 5x stable
        found.append(_near_in_runs(keys[order], words.take(order, 0), order, max_distance))
    code = np.unique(np.concatenate(found) @ np.array([n, 1], dtype=np.int64))
    return np.stack([code // n, code % n], 1)


def _as_words(bits: np.ndarray) -> np.ndarray:
    """The same bits as 64-bit words where the width allows (4x fewer XORs and popcounts)."""
    if bits.shape[1] % 8:
        return bits
    return np.ascontiguousarray(bits).view(np.uint64)


def _sampled_keys(columns: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Each hash's bits at `positions` (bit 0 = the first byte's high bit) as one integer,
    from `columns` (bytes x hashes): one 256-entry table look-up per byte sampled."""
    kind = np.uint32 if len(positions) <= 32 else np.uint64  # narrower keys sort faster
    keys: np.ndarray = np.zeros(columns.shape[1], dtype=kind)
    values: np.ndarray = np.arange(256, dtype=kind)
    for byte in np.unique(positions // 8):
        shifts = (7 - positions[positions // 8 == byte] % 8).astype(kind)
        lut: np.ndarray = np.zeros(256, dtype=kind)
        for shift in shifts:  # this byte's sampled bits, packed in sampling order
            lut = (lut << kind(1)) | ((values >> shift) & kind(1))
        keys = (keys << kind(len(shifts))) | lut[columns[byte]]
    return keys


def _near_in_runs(
    keys: np.ndarray, words: np.ndarray, order: np.ndarray, max_distance: int
) -> np.ndarray:
    """Pairs (i < j, original rows) within `max_distance` among rows sorted by key that share
    a key: rows d apart in a run, for d = 1, 2, ... until no run is that long. Sorted rows
    lie side by side in memory, so the comparisons read it in order."""
    pairs = [np.zeros((0, 2), dtype=np.int64)]
    for d in range(1, len(keys)):
        first = np.flatnonzero(keys[:-d] == keys[d:])
        if not len(first):
            break
        dist = np.bitwise_count(words[first] ^ words[first + d]).sum(1, dtype=np.int32)
        first = first[dist <= max_distance]
        pairs.append(np.sort(np.stack([order[first], order[first + d]], 1), 1))
    return np.concatenate(pairs)


def near_pairs_exact(bits: np.ndarray, max_distance: int, block: int = 1024) -> np.ndarray:
    """All pairs compared (N ** 2 work): the reference `near_pairs` is tested against.

    Blocked so memory stays at block x N bytes per bit-row instead of N x N.
    """
    n = len(bits)
    pairs = []
    for start in range(0, n, block):
        chunk = bits[start : start + block]
        dist = np.bitwise_count(chunk[:, None, :] ^ bits[None, :, :]).sum(-1, dtype=np.int32)
        i, j = np.nonzero(dist <= max_distance)
        i += start
        keep = i < j
        pairs.append(np.stack([i[keep], j[keep]], 1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def near_any(
    query: np.ndarray, reference: np.ndarray, max_distance: int, block: int = 256
) -> np.ndarray:
    """Which query hashes lie within `max_distance` bits of at least one reference hash."""
    hit = np.zeros(len(query), dtype=bool)
    if not len(query) or not len(reference):
        return hit
    for start in range(0, len(query), block):
        chunk = query[start : start + block]
        dist = np.bitwise_count(chunk[:, None, :] ^ reference[None, :, :]).sum(-1, dtype=np.int32)
        hit[start : start + block] = (dist <= max_distance).any(1)
    return hit


def duplicate_groups(
    key: pd.Series,
    phash: pd.Series | None = None,
    max_distance: int = -1,
    same: Sequence[pd.Series] = (),
) -> np.ndarray:
    """Connected components over "same `key`" (content hash, or an earlier grouping),
    "perceptual hashes within distance" and "same non-empty value" of each series in
    `same` (scene, person id...).

    Returns one group id per row, numbered by first appearance, so the ids are stable
    for a stable row order. `max_distance < 0` turns near-duplicate matching off.
    """
    n = len(key)
    edges = [_chain(key)]
    for values in same:
        edges.append(_chain(values.where(values.notna() & (values.astype(str) != ""), None)))
    if phash is not None and max_distance >= 0 and n:
        edges.append(near_pairs(hex_to_bits(phash), max_distance))
    e = np.concatenate(edges)
    graph = coo_matrix((np.ones(len(e), dtype=np.int8), (e[:, 0], e[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return pd.factorize(labels)[0]


def _chain(keys: pd.Series) -> np.ndarray:
    """Edges from each row to the first row with the same key (missing keys: none)."""
    codes = pd.factorize(keys)[0]  # NaN/None -> -1
    rows = np.arange(len(codes))
    first = pd.Series(rows).groupby(codes).transform("first").to_numpy()
    linked = codes >= 0
    return np.stack([rows[linked], first[linked]], 1)


def summarize_groups(df: pd.DataFrame) -> dict[str, int]:
    """Counts for the prepare report: how many files share a group, and with whom."""
    sizes = df.groupby("group").size()
    exact = df.groupby("sha256").size()
    return {
        "exact_duplicate_groups": int((exact > 1).sum()),
        "exact_duplicate_extra_files": int((exact - 1).sum()),
        "duplicate_groups": int((sizes > 1).sum()),
        "files_in_duplicate_groups": int(sizes[sizes > 1].sum()),
    }


def conflicting_groups(df: pd.DataFrame) -> pd.Index:
    """Groups whose members carry more than one label."""
    labels = df.groupby("group")["label"].nunique()
    return labels.index[labels > 1]
