"""Exact and near-duplicate groups, so that no copy of a test image is trained on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
# MISS_PROBABILITY. Only pairs sharing a key are compared: the work grew like N ** 1.34 from
# 10k to 1M hashes (benchmarks/dedup_scale.py) against N ** 2 for comparing all pairs.
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


def near_pairs(
    bits: np.ndarray, max_distance: int, miss: float = MISS_PROBABILITY, block: int = 1 << 20
) -> np.ndarray:
    """Index pairs (i < j) whose hashes differ in at most `max_distance` bits, sorted.

    Every pair returned is checked exactly; a near pair is missed with chance < `miss`
    (`near_pairs_exact` compares all pairs). Memory: the hashes, one table's keys and
    `block` candidate pairs at a time.
    """
    n, n_bits = len(bits), bits.shape[1] * 8
    key_bits, tables = lsh_plan(n, n_bits, max_distance, miss)
    if n < 2 or key_bits == 0 or n <= 2 * BUCKET:
        return near_pairs_exact(bits, max_distance)
    rng = np.random.default_rng(SEED)
    words = _as_words(bits)
    found = []
    for _ in range(tables):
        keys = _sampled_keys(bits, rng.choice(n_bits, key_bits, replace=False))
        for cand in _same_key_pairs(keys, block):
            dist = np.bitwise_count(words[cand[:, 0]] ^ words[cand[:, 1]]).sum(1, dtype=np.int32)
            found.append(cand[dist <= max_distance])
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    code = np.unique(np.concatenate(found) @ np.array([n, 1], dtype=np.int64))
    return np.stack([code // n, code % n], 1)


def _as_words(bits: np.ndarray) -> np.ndarray:
    """The same bits as 64-bit words where the width allows (4x fewer XORs and popcounts)."""
    if bits.shape[1] % 8:
        return bits
    return np.ascontiguousarray(bits).view(np.uint64)


def _sampled_keys(bits: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Each hash's bits at `positions` (bit 0 = the first byte's high bit), as one integer."""
    keys = np.zeros(len(bits), dtype=np.uint64)
    for p in positions:
        bit = (bits[:, p // 8] >> np.uint8(7 - p % 8)) & np.uint8(1)
        keys = (keys << np.uint64(1)) | bit.astype(np.uint64)
    return keys


def _same_key_pairs(keys: np.ndarray, block: int) -> Iterator[np.ndarray]:
    """Yield (i < j) pairs of rows with equal keys, about `block` pairs at a time."""
    order = np.argsort(keys, kind="stable")
    starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    for size in np.unique(sizes[sizes > 1]):
        first = starts[sizes == size]
        a, b = np.triu_indices(size, 1)
        per = max(1, block // len(a))  # buckets of this size per yielded block
        for k in range(0, len(first), per):
            members = order[first[k : k + per, None] + np.arange(size)]  # (buckets, size)
            pair = np.stack([members[:, a].ravel(), members[:, b].ravel()], 1)
            yield np.sort(pair, 1).astype(np.int64)


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
