"""Pictures: confusion matrix and labelled image grids (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
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
    tiles: Sequence[np.ndarray | None],
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
    # tight bbox: two-line captions under a single row would otherwise be cut off.
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def colorize(heatmap: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """A 2-D map stretched to its own range and coloured: uint8 HWC."""
    lo, hi = float(heatmap.min()), float(heatmap.max())
    scaled = (heatmap - lo) / (hi - lo) if hi > lo else np.zeros_like(heatmap, dtype=float)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)


def enlarge(tile: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upscale by a whole factor to at least `size` px: small maps and
    3x3 filters stay crisp instead of being blurred by the figure's interpolation."""
    k = max(1, -(-size // tile.shape[0]))
    return np.repeat(np.repeat(tile, k, axis=0), k, axis=1)


def plot_weight_histograms(
    names: Sequence[str],
    edges: np.ndarray,
    fractions: np.ndarray,
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """One row per layer, weight value along x, colour = log10 share of the layer's weights."""
    fig, ax = plt.subplots(figsize=(8, 2.5 + 0.13 * len(names)))
    with np.errstate(divide="ignore"):
        shown = np.log10(fractions)
    image = ax.imshow(
        np.where(np.isfinite(shown), shown, np.nan),
        aspect="auto",
        cmap="magma",
        extent=(edges[0], edges[-1], len(names) - 0.5, -0.5),
        interpolation="nearest",
    )
    ax.set_yticks(range(len(names)), names, fontsize=max(3, min(8, 400 // max(len(names), 1))))
    ax.set_xlabel("weight value (edge bins hold everything beyond)")
    fig.colorbar(image, ax=ax, label="log10 share of the layer", shrink=0.8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def shorten(name: str, width: int = 22) -> str:
    """A file name cut to fit under a tile (the CSV next to the picture has the whole path)."""
    return name if len(name) <= width else name[: width - 3] + "..."


def plot_notice(text: str, path: str | os.PathLike, size: tuple[int, int] = (640, 80)) -> None:
    """A picture that only says `text`: the figure of a step that was switched off."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((20, size[1] // 2 - 10), text, fill="black")
    image.save(path)


def plot_review_gallery(
    tiles: Sequence[np.ndarray], rows: pd.DataFrame, total: int, path: str | os.PathLike
) -> None:
    """The label audit's pictures to review: one tile per row of `rows` (path, split, label,
    predicted, self_confidence), `total` of them left to review in all."""
    captions = [
        f"{shorten(Path(r.path).name)} ({r.split})\n"
        f"{r.label} -> {r.predicted}, p {r.self_confidence:.2f}"
        for r in rows.itertuples()
    ]
    title = f"Label audit: {total} pictures to review (flagged or out-of-fold errors)"
    plot_grid(
        tiles,
        captions,
        path,
        title=title + (f", first {len(rows)} shown" if total > len(rows) else ""),
    )
