"""Stage compare: k-fold CV of backbones x {pretrained, scratch} x {frozen, fine-tuned}."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch

from facemask.config import cache_dir, code_fingerprint, load_params, seed_everything, tune_malloc
from facemask.data.cache import Split, decode_frame, to_tensor
from facemask.models.factory import create_model
from facemask.training.compare import (
    cv_folds,
    inner_split,
    make_grid,
    measure_latency,
    run_fold,
    summarize,
    to_markdown,
)


def fold_key(
    params: dict,
    config: str,
    fold: int,
    dev: pd.DataFrame,
    section: str = "compare",
    repeat: int = 0,
) -> str:
    """Identifies one (configuration, fold) result, so an interrupted run resumes.

    Only what shapes that result goes in: adding a model to `compare.models` leaves the
    finished folds of the others valid, and a grid in another section reuses them.
    """
    shared = {k: params[section][k] for k in ("image_size", "finetune_epochs")}
    spec = [*(params[k] for k in ("seed", "classes", "train", "cv")), shared]
    # The code that computes a fold: a change to it makes every stored fold a miss.
    spec.append(code_fingerprint("facemask.training.compare"))
    where = fold if repeat == 0 else f"{repeat}:{fold}"
    h = hashlib.sha256(json.dumps([spec, config, where], sort_keys=True, default=str).encode())
    h.update(pd.util.hash_pandas_object(dev[["sha256", "label", "group"]]).values.tobytes())
    return h.hexdigest()[:20]


def plot_board(board: pd.DataFrame, path: Path) -> None:
    """Mean CV accuracy against CPU latency; marker area ~ parameters, error bars = std."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = {"frozen": "o", "finetune": "s"}
    colors = {"pretrained": "tab:blue", "scratch": "tab:orange"}
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
            marker=markers[r["mode"]],
            color=colors[r["weights"]],
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
    for label, m in markers.items():
        ax.scatter([], [], marker=m, color="grey", label=label)
    for label, c in colors.items():
        ax.scatter([], [], marker="o", color=c, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("CPU latency, ms per image (batch 1, 2 threads, log scale)")
    ax.set_ylabel("accuracy, mean of k folds (bars: std)")
    ax.set_title("Accuracy vs latency; marker area ~ parameter count")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_cv_fold(
    cfg, dev: pd.DataFrame, images, labels, folds, f: int, classes, tp: dict, seed: int
) -> dict:
    """Fit on every fold but `f` (an inner part of it for early stopping), score on `f`."""
    fit = (folds != f).nonzero()[0]
    inner = inner_split(dev.iloc[fit], seed + f)
    parts = [fit[~inner], fit[inner], (folds == f).nonzero()[0]]
    train, valid, test = (
        Split(images[i], labels[i], dev["sha256"].iloc[i].tolist()) for i in parts
    )
    copies = dev["copies"].to_numpy()[parts[2]]
    store = cache_dir() / "features"
    return run_fold(cfg, train, valid, test, copies, classes, tp, store, seed + f)


def main(params: dict, splits: Path, out: Path, section: str = "compare") -> pd.DataFrame:
    """Cross-validate every configuration on train+valid; write the leaderboard files.

    `section` names the params.yaml grid (models, weights, modes, image_size,
    finetune_epochs, optional repeats): `compare` is the backbone leaderboard.
    """
    tune_malloc()
    seed_everything(params["seed"])
    cp, classes, k = params[section], list(params["classes"]), params["cv"]["folds"]
    repeats = cp.get("repeats", 1)
    dev = pd.concat([pd.read_csv(splits / f"{s}.csv") for s in ("train", "valid")])
    dev = dev.sort_values("path").reset_index(drop=True)
    size = cp["image_size"]
    images = to_tensor(decode_frame(dev, size))
    labels = torch.tensor([classes.index(c) for c in dev["label"]])
    # The test split stays untouched: folds are drawn from train+valid, groups kept whole.
    tp = json.loads(json.dumps(params["train"]))
    tp["image_size"], tp["finetune"]["epochs"] = size, cp["finetune_epochs"]

    grid, skipped = make_grid(cp["models"], cp["weights"], cp["modes"])
    for cfg, why in skipped:
        print(f"skip {cfg.name}: {why}")
    done_dir = cache_dir() / "compare"  # one JSON per finished (config, fold): resumable
    done_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(repeats):
        # Repeats redraw the folds: k-fold figures move by a few errors with the draw.
        seed = params["seed"] + 100 * r
        folds = cv_folds(dev, k, seed)
        for cfg in grid:
            for f in range(folds.max() + 1):
                key = fold_key(params, cfg.name, f, dev, section, r)
                done = done_dir / f"{key}.json"
                if done.is_file():
                    row = json.loads(done.read_text())
                else:
                    row = run_cv_fold(cfg, dev, images, labels, folds, f, classes, tp, seed)
                    tmp = done.with_suffix(".tmp")
                    tmp.write_text(json.dumps(row))
                    tmp.replace(done)
                rows.append(
                    {
                        "config": cfg.name,
                        "model": cfg.model,
                        "weights": cfg.weights,
                        "mode": cfg.mode,
                        "repeat": r,
                        "fold": f,
                        **row,
                    }
                )
                print(f"{cfg.name} repeat {r} fold {f}: accuracy {row['accuracy']:.4f}")
    per_fold = pd.DataFrame(rows)
    board = summarize(per_fold)
    speed = {}
    for name in board["model"].unique():
        model, _ = create_model(name, len(classes), pretrained=False)
        model = model.to(memory_format=torch.channels_last)
        speed[name] = (
            sum(p.numel() for p in model.parameters()) / 1e6,
            measure_latency(model, size),
        )
    board["params_m"] = board["model"].map(lambda m: speed[m][0])
    board["latency_ms"] = board["model"].map(lambda m: speed[m][1])

    out.mkdir(parents=True, exist_ok=True)
    per_fold.round(6).to_csv(out / "folds.csv", index=False, lineterminator="\n")
    board.round(6).to_csv(out / "leaderboard.csv", index=False, lineterminator="\n")
    metrics = {
        r["config"]: {
            "accuracy_mean": round(r["accuracy_mean"], 5),
            "accuracy_std": round(r["accuracy_std"], 5),
            "macro_f1_mean": round(r["macro_f1_mean"], 5),
        }
        for _, r in board.iterrows()
    }
    (out / "leaderboard.json").write_text(json.dumps(metrics, indent=2) + "\n")
    header = (
        f"{k}-fold group-aware CV on train+valid ({len(dev)} images, test untouched)"
        + (f", {repeats} repeats (folds redrawn)" if repeats > 1 else "")
        + f", {size} px, fine-tune {cp['finetune_epochs']} epochs. Errors: held-out"
        " mistakes summed over folds (one picture per group of copies).\n\n"
    )
    skipped_md = "".join(f"- skipped {c.name}: {why}\n" for c, why in skipped)
    (out / "leaderboard.md").write_text(header + to_markdown(board) + "\n\n" + skipped_md)
    plot_board(board, out / "accuracy_vs_latency.png")
    print(to_markdown(board))
    return board


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("splits", type=Path, help="folder with train.csv and valid.csv")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("leaderboard"))
    parser.add_argument("--section", default="compare", help="params.yaml section of the grid")
    args = parser.parse_args()
    main(load_params(args.params), args.splits, args.out, args.section)
