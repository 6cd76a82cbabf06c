"""Pictures: confusion matrix and labelled image grids (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay


def plot_confusion(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    classes: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """Confusion matrix with counts, rows = true class."""
    fig, ax = plt.subplots(figsize=(1.6 * len(classes) + 2.5, 1.4 * len(classes) + 2))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(classes), ax=ax, cmap="Blues", colorbar=False
    )
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_grid(
    tiles: Sequence[np.ndarray],
    captions: Sequence[str],
    path: str | os.PathLike,
    columns: int = 6,
    title: str = "",
    colors: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
) -> None:
    """Tiles (uint8 HWC, or None for an empty cell) with a caption under each."""
    rows = max(1, -(-len(tiles) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.4 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if k < len(tiles) and tiles[k] is not None:
            ax.imshow(tiles[k])
            ax.set_xlabel(captions[k], fontsize=7, color=(colors or ["black"] * len(tiles))[k])
        if row_labels and k % columns == 0 and k // columns < len(row_labels):
            ax.set_ylabel(row_labels[k // columns], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
