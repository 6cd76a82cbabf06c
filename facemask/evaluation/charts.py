"""Figures of evaluation tables: accuracy per slice, accuracy under corruption."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def plot_slices(table: pd.DataFrame, path: Path) -> None:
    """One panel per slice family: accuracy with its 95 % interval; small slices greyed."""
    families = list(dict.fromkeys(table["family"]))
    fig, axes = plt.subplots(
        len(families), 1, figsize=(8, 1.0 + 0.32 * len(table) + 0.4 * len(families)), squeeze=False
    )
    for ax, family in zip(axes[:, 0], families, strict=True):
        rows = table[table["family"] == family].reset_index(drop=True)
        colours = ["#bbbbbb" if s else "#1f77b4" for s in rows["small"]]
        err = [rows["accuracy"] - rows["acc_lo"], rows["acc_hi"] - rows["accuracy"]]
        ax.barh(rows.index, rows["accuracy"], xerr=err, color=colours, capsize=2)
        ax.set_yticks(
            rows.index, [f"{s} (n={n})" for s, n in zip(rows["slice"], rows["n"], strict=True)]
        )
        ax.set_xlim(max(0.0, float(rows["acc_lo"].min()) - 0.05), 1.0)
        ax.invert_yaxis()
        ax.set_title(family, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("accuracy (95 % bootstrap interval; grey: too few to rank)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_robustness(table: pd.DataFrame, path: Path) -> None:
    """Accuracy against severity, one panel per corruption, clean accuracy as a dashed line."""
    clean = table.loc[table["corruption"] == "none", "accuracy"]
    names = [c for c in dict.fromkeys(table["corruption"]) if c != "none"]
    cols = min(4, max(len(names), 1))
    rows = -(-len(names) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        part = table[table["corruption"] == name]
        ax.plot([str(s) for s in part["severity"]], part["accuracy"], marker="o")
        if len(clean):
            ax.axhline(float(clean.iloc[0]), ls="--", c="grey", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(max(0.0, float(table["accuracy"].min()) - 0.05), 1.0)
        ax.tick_params(labelsize=7)
    fig.supylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
