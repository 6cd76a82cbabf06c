"""Accuracy per slice of the data (face size, light, sharpness, colour, source, attributes)
with bootstrap intervals, and which slice of each family does worst."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's "L"
CHUNK = 256  # images per float32 batch: ~150 MB of grey levels at 224 px

# Bucket edges. Face size: px of the short side of the original picture or crop.
FACE_SIZE = [(32, "<32"), (64, "32-64"), (128, "64-128"), (np.inf, ">=128")]
DARK, BRIGHT = 70, 185  # mean luma 0-255
LIGHT = [f"dark (<{DARK})", "normal", f"bright (>{BRIGHT})"]
# Variance of the 4-neighbour Laplacian of the grey picture squashed to MEASURE_SIZE px.
# benchmarks/blur_edges.py (in git history at 2d579fd; 40 test photos of the default data,
# each shrunk to a short side of S px, then to 128 x 128: what is left of an S px face) gives
# medians of
# S=128 ~390, 96 ~200, 64 ~80, 48 ~55, 32 ~19, 16 ~4. So "sharp" has the detail of a face
# of ~96 px or more, "blurry" that of ~48 px or less (or is out of focus / shaken as badly).
BLUR = [(55, "blurry (<55)"), (200, "soft (55-200)"), (np.inf, "sharp (>=200)")]
# Pictures are measured at this side whatever the model's input size, so that a blur
# threshold means the same at every image_size (the default input size: its decode cache
# is there already).
MEASURE_SIZE = 128
GREY_DIFF = 2  # mean max-min channel difference under which a picture is grey


def image_measures(images: np.ndarray) -> pd.DataFrame:
    """brightness (mean luma 0-255), blur (variance of the Laplacian of the grey image; low =
    blurry) and grayscale (channels all but equal) per uint8 NHWC image."""
    parts = []
    for s in range(0, len(images), CHUNK):
        x = images[s : s + CHUNK]
        # Channel by channel: numpy is slow reducing over a trailing axis of 3.
        ch = [x[..., 0]] * 3 if x.shape[-1] == 1 else [x[..., i] for i in range(3)]
        grey = sum(w * c.astype(np.float32) for w, c in zip(LUMA, ch, strict=True))
        lap = (
            grey[:, :-2, 1:-1]
            + grey[:, 2:, 1:-1]
            + grey[:, 1:-1, :-2]
            + grey[:, 1:-1, 2:]
            - 4 * grey[:, 1:-1, 1:-1]
        )
        spread = np.maximum(np.maximum(*ch[:2]), ch[2]) - np.minimum(np.minimum(*ch[:2]), ch[2])
        parts.append(
            pd.DataFrame(
                {
                    "brightness": grey.mean((1, 2), dtype=np.float64).round(3),
                    "blur": lap.var((1, 2), dtype=np.float64).round(3),
                    "grayscale": spread.mean((1, 2)) < GREY_DIFF,
                }
            )
        )
    if not parts:
        return pd.DataFrame({"brightness": [], "blur": [], "grayscale": []})
    return pd.concat(parts, ignore_index=True)


def _bucket(values: pd.Series, edges: list[tuple[float, str]]) -> pd.Categorical:
    """Label of the first edge a value lies below; missing values are "unknown"."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    names = [name for _, name in edges]
    out = np.select([v < e for e, _ in edges], names, "unknown")
    out[np.isnan(v)] = "unknown"
    return pd.Categorical(out, categories=[*names, "unknown"])


def add_slices(df: pd.DataFrame, measures: pd.DataFrame | None = None) -> pd.DataFrame:
    """A copy of df with slice columns: face_size (from width, height), brightness, blur and
    colour (from `measures`, row for row), and source and attr_* with NaN as "unknown"."""
    out = df.copy()
    if {"width", "height"} <= set(df.columns):
        out["face_size"] = _bucket(df[["width", "height"]].min(axis=1, skipna=False), FACE_SIZE)
    if measures is not None:
        if len(measures) != len(df):
            raise ValueError(f"{len(measures)} image measures for {len(df)} rows")
        m = measures.reset_index(drop=True)
        light = m["brightness"].to_numpy(np.float64)
        light = np.select([light < DARK, light > BRIGHT], [LIGHT[0], LIGHT[2]], LIGHT[1])
        out["brightness"] = pd.Categorical(light, categories=LIGHT)
        out["blur"] = _bucket(m["blur"], BLUR)
        out["colour"] = np.where(m["grayscale"].to_numpy(bool), "grayscale", "colour")
    for c in [c for c in df.columns if c == "source" or c.startswith("attr_")]:
        out[c] = df[c].astype(object).where(df[c].notna(), "unknown").astype(str)
    return out


def _interval(k: int, n: int, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """95 % percentile bootstrap interval of an accuracy of k right of n. Resampling n rows
    of 0/1 outcomes with replacement draws Binomial(n, k/n) right ones, so the resamples
    are drawn as that directly: the same distribution, no n x n_boot index matrix."""
    boot = rng.binomial(n, k / n, n_boot) / n
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def _groups(df: pd.DataFrame, cols: list[str]):
    """(slice name, row mask) per observed value (combination) of cols, in category order."""
    for key, idx in df.groupby(cols, observed=True, sort=True, dropna=False).indices.items():
        key = key if isinstance(key, tuple) else (key,)
        mask = np.zeros(len(df), bool)
        mask[idx] = True
        yield " x ".join("unknown" if pd.isna(k) else str(k) for k in key), mask


def slice_table(
    df: pd.DataFrame,
    families: Sequence[str],
    intersections: Sequence[tuple[str, str]] = (),
    classes: Sequence[str] | None = None,
    min_count: int = 30,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """family, slice, n, accuracy, acc_lo, acc_hi (95 % bootstrap), recall_<class>, small
    (n < min_count) per slice of each family present in df (label == predicted is right).
    An intersection (a, b) is the family "a x b" with slices "va x vb"."""
    df = df.reset_index(drop=True)
    classes = sorted(df["label"].unique()) if classes is None else list(classes)
    right = (df["label"] == df["predicted"]).to_numpy()
    label = df["label"].to_numpy()
    specs = [(f, [f]) for f in families] + [(f"{a} x {b}", [a, b]) for a, b in intersections]
    rows = []
    for family, cols in specs:
        if not set(cols) <= set(df.columns):
            continue
        for name, mask in _groups(df, cols):
            n, k = int(mask.sum()), int(right[mask].sum())
            # A seed per slice: its interval does not move when other families come or go.
            rng = np.random.default_rng([seed, zlib.crc32(f"{family}/{name}".encode())])
            lo, hi = _interval(k, n, n_boot, rng)
            row = {"family": family, "slice": name, "n": n, "accuracy": k / n}
            row |= {"acc_lo": lo, "acc_hi": hi}
            for c in classes:
                of_c = mask & (label == c)
                row[f"recall_{c}"] = right[of_c].mean() if of_c.any() else np.nan
            rows.append(row | {"small": n < min_count})
    cols = ["family", "slice", "n", "accuracy", "acc_lo", "acc_hi"]
    return pd.DataFrame(rows, columns=[*cols, *[f"recall_{c}" for c in classes], "small"]).round(6)


def slice_summary(table: pd.DataFrame) -> dict[str, dict]:
    """Per family, over its slices not flagged small: the worst and best slice, the gap and
    ratio between their accuracies, how many slices were ranked and how many flagged small.
    With fewer than 2 ranked slices: worst_* of the only one (or None), best/gap/ratio None."""
    out = {}
    for family, t in table.groupby("family", sort=False):
        ok = t[~t["small"].astype(bool)]
        worst = ok.loc[ok["accuracy"].idxmin()] if len(ok) else None
        best = ok.loc[ok["accuracy"].idxmax()] if len(ok) >= 2 else None
        gap: float | None = None
        ratio: float | None = None
        if best is not None and worst is not None:  # 2+ ranked slices: both are set
            lo, hi = worst["accuracy"], best["accuracy"]
            gap = round(float(hi - lo), 6)
            ratio = None if hi == 0 else round(float(lo / hi), 6)
        out[family] = {
            "worst_slice": None if worst is None else worst["slice"],
            "worst_accuracy": None if worst is None else float(worst["accuracy"]),
            "worst_n": None if worst is None else int(worst["n"]),
            "best_slice": None if best is None else best["slice"],
            "gap": gap,
            "ratio": ratio,
            "ranked": len(ok),
            "flagged": int(t["small"].astype(bool).sum()),
        }
    return out
