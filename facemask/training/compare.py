"""Fair comparison of configurations: group-aware k-fold CV, latency, a leaderboard."""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from facemask.data.cache import Normalize, Split
from facemask.data.split import group_folds
from facemask.evaluation.metrics import classification_metrics
from facemask.models.factory import create_model, members, model_cfg, wheel_weights_path
from facemask.models.predict import predict_logits
from facemask.training.train import transfer_learn


@dataclass(frozen=True)
class Config:
    model: str
    weights: str  # "pretrained" or "scratch"
    mode: str  # "frozen" (linear head only) or "finetune" (head, then the whole net)

    @property
    def name(self) -> str:
        return f"{self.model}/{self.weights}/{self.mode}"


def offline_weights(name: str) -> bool:
    """Can pretrained weights for `name` (every backbone in it) be had without the hub?"""
    return all(wheel_weights_path(m) is not None for m in members(name))


def published(name: str) -> bool:
    """Does timm know published ImageNet weights for `name` (every backbone in it)?"""
    return all(model_cfg(m).get("hf_hub_id") or model_cfg(m).get("url") for m in members(name))


def make_grid(
    models: list[str], weights: list[str], modes: list[str], hub: bool = False
) -> tuple[list[Config], list[tuple[Config, str]]]:
    """Every (model, weights, mode), and the cells skipped with the reason."""
    grid, skipped = [], []
    for m, w, mode in itertools.product(models, weights, modes):
        cfg = Config(m, w, mode)
        if w == "pretrained" and not published(m):
            skipped.append((cfg, "no published pretrained weights"))
        elif w == "pretrained" and not (offline_weights(m) or hub):
            skipped.append((cfg, "pretrained weights not available offline"))
        else:
            grid.append(cfg)
    return grid, skipped


def train_only(df: pd.DataFrame) -> np.ndarray:
    """Rows of groups pinned to train (`fixed_split`, e.g. synthetic faces): never held out."""
    if "fixed_split" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    pinned = df["fixed_split"].astype(str) == "train"  # NaN -> "nan"
    return df["group"].isin(df.loc[pinned, "group"]).to_numpy()


def cv_folds(df: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Fold per row as `group_folds`; rows pinned to train get -1 and so are always fitted on."""
    fixed = train_only(df)
    folds = np.full(len(df), -1, dtype=np.int64)
    folds[~fixed] = group_folds(df[~fixed], n_folds, seed)
    return folds


def inner_split(df: pd.DataFrame, seed: int, fraction: float = 0.1) -> np.ndarray:
    """Boolean mask of an inner validation part (for early stopping), groups kept whole."""
    # Like the test folds, the early-stopping part holds no train-pinned rows.
    return (group_folds(df, round(1 / fraction), seed) == 0) & ~train_only(df)


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


def run_fold(
    cfg: Config,
    train: Split,
    valid: Split,
    test: Split,
    test_copies: np.ndarray,
    classes: list[str],
    tp: dict,
    store_root,
    seed: int,
) -> dict:
    """Train one configuration on one fold; metrics on the held-out fold (one per copy)."""
    torch.manual_seed(seed)
    tp = copy.deepcopy(tp)
    if cfg.mode == "frozen":
        tp["finetune"]["epochs"] = 0
    model, source = create_model(cfg.model, len(classes), cfg.weights == "pretrained")
    model = model.to(memory_format=torch.channels_last)
    history, seconds = transfer_learn(model, train, valid, tp, len(classes), store_root, seed)
    mcfg = model.pretrained_cfg
    _, first = np.unique(test_copies, return_index=True)
    logits = predict_logits(model, test.images[first], Normalize(mcfg["mean"], mcfg["std"]))
    truth = [classes[i] for i in test.labels[first]]
    pred = [classes[i] for i in logits.argmax(1)]
    m = classification_metrics(truth, pred, classes)
    row = {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "n": m["n"]}
    row |= {f"f1_{c}": v["f1"] for c, v in m["per_class"].items()}
    row |= {
        "train_seconds": sum(seconds.values()),
        "weights_source": source,
        "epochs": len(history),
    }
    return row


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
