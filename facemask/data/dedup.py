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


def near_pairs(bits: np.ndarray, max_distance: int, block: int = 1024) -> np.ndarray:
    """Index pairs (i < j) whose hashes differ in at most `max_distance` bits.

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
