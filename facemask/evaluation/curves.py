"""One-vs-rest ROC and precision-recall curves per class, and the areas under them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

MAX_POINTS = 200  # per curve: a smooth plot, a small CSV

# class indices or class names, as a list or an array
Labels = Sequence | np.ndarray


def _label_indices(labels: Labels, classes: Sequence[str]) -> np.ndarray:
    """Class indices, whether labels come as indices or as class names."""
    y = np.asarray(labels)
    if y.dtype.kind in "iu":
        return y
    return np.array([list(classes).index(c) for c in y], dtype=np.int64)


def _thin(table: pd.DataFrame) -> pd.DataFrame:
    """At most MAX_POINTS evenly spaced rows, the first and last kept."""
    if len(table) <= MAX_POINTS:
        return table.reset_index(drop=True)
    keep = np.unique(np.linspace(0, len(table) - 1, MAX_POINTS).round().astype(int))
    return table.iloc[keep].reset_index(drop=True)


def _one_vs_rest(labels: Labels, classes: Sequence[str]) -> dict[str, np.ndarray]:
    y = _label_indices(labels, classes)
    return {c: y == i for i, c in enumerate(classes)}


def roc_curves(
    probs: np.ndarray, labels: Labels, classes: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """fpr, tpr, threshold per class (the first threshold is inf: nothing called positive).
    A class absent from the labels, or the only one present, gets an empty table."""
    out = {}
    for i, (c, y) in enumerate(_one_vs_rest(labels, classes).items()):
        if y.all() or not y.any():
            out[c] = pd.DataFrame(columns=["fpr", "tpr", "threshold"], dtype=float)
            continue
        fpr, tpr, thr = roc_curve(y, probs[:, i], drop_intermediate=True)
        out[c] = _thin(pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr}).round(6))
    return out


def pr_curves(probs: np.ndarray, labels: Labels, classes: Sequence[str]) -> dict[str, pd.DataFrame]:
    """precision, recall, threshold per class; the closing point (recall 0, precision 1) has
    threshold inf. A class absent from the labels gets an empty table."""
    out = {}
    for i, (c, y) in enumerate(_one_vs_rest(labels, classes).items()):
        if not y.any():
            out[c] = pd.DataFrame(columns=["precision", "recall", "threshold"], dtype=float)
            continue
        p, r, thr = precision_recall_curve(y, probs[:, i], drop_intermediate=True)
        table = pd.DataFrame({"precision": p, "recall": r, "threshold": np.r_[thr, np.inf]})
        out[c] = _thin(table.round(6))
    return out


def curve_metrics(probs: np.ndarray, labels: Labels, classes: Sequence[str]) -> dict:
    """{class: {roc_auc, average_precision}}, one-vs-rest, rounded to 6 places; None where
    a class is absent from the labels (ROC AUC also where it is the only one present)."""
    out = {}
    for i, (c, y) in enumerate(_one_vs_rest(labels, classes).items()):
        both = y.any() and not y.all()
        out[c] = {
            "roc_auc": round(float(roc_auc_score(y, probs[:, i])), 6) if both else None,
            "average_precision": round(float(average_precision_score(y, probs[:, i])), 6)
            if y.any()
            else None,
        }
    return out
