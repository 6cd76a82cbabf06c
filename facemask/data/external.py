"""External test sets: labelled data unlike the training set, kept honest.

An external figure is only worth reporting if the model never saw the pictures: every
picture that is an exact (sha256) or near (perceptual hash) copy of one in train or valid
is removed first, and counted.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.data.dedup import hex_to_bits, near_any


def unique_pictures(index: pd.DataFrame) -> pd.DataFrame:
    """One row per picture: the first (by path) of each group of copies within the set."""
    if "copies" not in index or index.empty:
        return index.reset_index(drop=True)
    ordered = index.sort_values("path", kind="stable")
    return ordered.drop_duplicates("copies").reset_index(drop=True)


def seen_in_training(frame: pd.DataFrame, seen: pd.DataFrame, max_distance: int) -> np.ndarray:
    """Rows of `frame` whose picture is in `seen` (train + valid): same bytes, or a perceptual
    hash within `max_distance` bits (-1: exact copies only)."""
    hit = frame["sha256"].isin(set(seen["sha256"])).to_numpy(copy=True)
    if max_distance >= 0 and len(frame) and len(seen):
        hit |= near_any(hex_to_bits(frame["phash"]), hex_to_bits(seen["phash"]), max_distance)
    return hit


def left_out_counts(rejected: pd.DataFrame) -> dict[str, int]:
    """Boxes or folders whose names map to no class, counted by name (`unmapped ...` reasons)."""
    if rejected.empty:
        return {}
    reasons = rejected["reason"].astype(str)
    names = reasons[reasons.str.startswith("unmapped")].str.extract(r"'([^']+)'")[0]
    return {str(k): int(v) for k, v in names.value_counts().sort_index().items()}


def count_files(folder: Path) -> int:
    """Files under a folder, recursively (what an unmapped class folder holds)."""
    return sum(len(files) for _, _, files in os.walk(folder))
