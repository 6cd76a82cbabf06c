"""The comparison's leaderboard: per-fold results summed up per configuration, CPU latency
and size per model, and the files a reader looks at (CSV, JSON, markdown, a scatter plot).

Apart from facemask.training.compare on purpose: the fold cache is keyed by that module's
code, and how results are ranked or drawn must not make finished folds a miss.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt
import pandas as pd
import torch

from facemask.models.factory import create_model

MARKERS = {"frozen": "o", "finetune": "s"}  # by mode
COLORS = {"pretrained": "tab:blue", "scratch": "tab:orange"}  # by weights


def summarize(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over folds (of every repeat) of every metric, and the
    held-out errors summed, one row per configuration."""
    metrics = [c for c in folds.columns if c == "accuracy" or c.startswith(("macro_f1", "f1_"))]
    agg = folds.groupby("config", sort=False)[metrics].agg(["mean", "std"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    folds = folds.assign(errors=((1 - folds["accuracy"]) * folds["n"]).round().astype(int))
    extra = folds.groupby("config", sort=False).agg(
        model=("model", "first"),
        weights=("weights", "first"),
        mode=("mode", "first"),
        folds=("fold", "size"),
        errors=("errors", "sum"),
        n=("n", "sum"),
        train_seconds=("train_seconds", "mean"),
    )
    return extra.join(agg).reset_index()


@torch.no_grad()
def measure_latency(model: torch.nn.Module, size: int, batch: int = 1, reps: int = 50) -> float:
    """Fastest of `reps` timed calls, CPU milliseconds per image (after warm-up).

    The minimum, not the median: on a shared 2-core VM the median of one model moved by
    up to 40 % between runs, the minimum by under 10 %; interference only adds time.
    """
    model.eval()
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    for _ in range(10):  # first calls pick oneDNN kernels and grow buffers: not timed
        model(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - t) * 1000 / batch)
    return float(min(times))


def add_speed(board: pd.DataFrame, n_classes: int, size: int) -> pd.DataFrame:
    """The board with each model's parameters (millions) and CPU latency (ms per image)."""
    speed = {}
    for name in board["model"].unique():
        model, _ = create_model(name, n_classes, pretrained=False)
        model = model.to(memory_format=torch.channels_last)
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        speed[name] = (params_m, measure_latency(model, size))
    return board.assign(
        params_m=board["model"].map(lambda m: speed[m][0]),
        latency_ms=board["model"].map(lambda m: speed[m][1]),
    )


def to_markdown(board: pd.DataFrame) -> str:
    """The leaderboard as a markdown table, best mean accuracy first."""
    rows = []
    for _, r in board.sort_values("accuracy_mean", ascending=False).iterrows():
        rows.append(
            {
                "model": r["model"],
                "weights": r["weights"],
                "mode": r["mode"],
                "accuracy": f"{r['accuracy_mean']:.2%} ± {r['accuracy_std']:.2%}",
                "macro F1": f"{r['macro_f1_mean']:.3f} ± {r['macro_f1_std']:.3f}",
                "errors": f"{r['errors']} / {r['n']}",
                "params (M)": f"{r['params_m']:.2f}",
                "CPU ms/img": f"{r['latency_ms']:.1f}",
                "train s/fold": f"{r['train_seconds']:.0f}",
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False)


def board_metrics(board: pd.DataFrame) -> dict:
    """What DVC compares between runs: mean and std of accuracy, mean macro F1 per config."""
    return {
        r["config"]: {
            "accuracy_mean": round(r["accuracy_mean"], 5),
            "accuracy_std": round(r["accuracy_std"], 5),
            "macro_f1_mean": round(r["macro_f1_mean"], 5),
        }
        for _, r in board.iterrows()
    }


def describe_cv(n_folds: int, n_images: int, repeats: int, size: int, finetune_epochs: int) -> str:
    """The paragraph above the markdown table: how the numbers were made."""
    return (
        f"{n_folds}-fold group-aware CV on train+valid ({n_images} images, test untouched)"
        + (f", {repeats} repeats (folds redrawn)" if repeats > 1 else "")
        + f", {size} px, fine-tune {finetune_epochs} epochs. Errors: held-out"
        " mistakes summed over folds (one picture per group of copies).\n\n"
    )


def draw_board(board: pd.DataFrame) -> plt.Figure:
    """Mean CV accuracy against CPU latency; marker area ~ parameters, error bars = std."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for _, r in board.iterrows():
        ax.errorbar(
            r["latency_ms"],
            r["accuracy_mean"],
            yerr=r["accuracy_std"],
            fmt="none",
            ecolor="grey",
            alpha=0.6,
        )
        ax.scatter(
            r["latency_ms"],
            r["accuracy_mean"],
            s=30 + 25 * r["params_m"],
            marker=MARKERS[r["mode"]],
            color=COLORS[r["weights"]],
            alpha=0.8,
        )
    # One label per model and weights: its frozen and fine-tuned points share an x and
    # often a y, and two labels there print over each other. Marker shape tells the mode.
    for _, r in board.sort_values("accuracy_mean").groupby(["model", "weights"]).tail(1).iterrows():
        ax.annotate(
            r["model"],
            (r["latency_ms"], r["accuracy_mean"]),
            fontsize=7,
            xytext=(6, 3),
            textcoords="offset points",
        )
    for label, m in MARKERS.items():
        ax.scatter([], [], marker=m, color="grey", label=label)
    for label, c in COLORS.items():
        ax.scatter([], [], marker="o", color=c, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("CPU latency, ms per image (batch 1, 2 threads, log scale)")
    ax.set_ylabel("accuracy, mean of k folds (bars: std)")
    ax.set_title("Accuracy vs latency; marker area ~ parameter count")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_board(board: pd.DataFrame, path: Path) -> None:
    """draw_board, saved as a PNG."""
    fig = draw_board(board)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_leaderboard(
    per_fold: pd.DataFrame, board: pd.DataFrame, out: Path, header: str, skipped: list[str]
) -> None:
    """folds.csv, leaderboard.csv/.json/.md and accuracy_vs_latency.png under `out`;
    `skipped` lines name the configurations left out and why."""
    out.mkdir(parents=True, exist_ok=True)
    per_fold.round(6).to_csv(out / "folds.csv", index=False, lineterminator="\n")
    board.round(6).to_csv(out / "leaderboard.csv", index=False, lineterminator="\n")
    (out / "leaderboard.json").write_text(json.dumps(board_metrics(board), indent=2) + "\n")
    skipped_md = "".join(f"- skipped {line}\n" for line in skipped)
    (out / "leaderboard.md").write_text(header + to_markdown(board) + "\n\n" + skipped_md)
    plot_board(board, out / "accuracy_vs_latency.png")
