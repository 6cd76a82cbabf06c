"""Gather every scored picture (held-in test and external sets), with its slice columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from facemask.data.cache import decode_frame
from facemask.evaluation.slices import MEASURE_SIZE, add_slices, image_measures

# Slice families computed for every picture; attr_* columns join them where a set has them.
FAMILIES = ("source", "face_size", "brightness", "blur", "colour")


def gather_predictions(
    test_csv: Path, external_dir: Path, size: int = MEASURE_SIZE, batch: int = 512
) -> pd.DataFrame:
    """The test split's and every external set's prediction rows, with slice columns.

    Brightness, blur and colour are measured on the decoded picture at `size` px (the
    decode cache; MEASURE_SIZE by default, where the blur edges hold), a batch at a time so
    memory stays flat.
    """
    frames = [pd.read_csv(test_csv)]
    frames += [pd.read_csv(f) for f in sorted(external_dir.glob("*.csv"))]
    df = pd.concat(frames, ignore_index=True)
    parts = [
        image_measures(decode_frame(df.iloc[i : i + batch], size)) for i in range(0, len(df), batch)
    ]
    measures = pd.concat(parts, ignore_index=True) if parts else None
    return add_slices(df, measures)
