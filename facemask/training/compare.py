"""Fair comparison of configurations: group-aware k-fold CV, each fold's result stored under a
key of its inputs and of this code (facemask.training.leaderboard ranks them)."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facemask.config import code_fingerprint
from facemask.data.cache import Normalize, Split
from facemask.data.split import group_folds
from facemask.evaluation.metrics import classification_metrics
from facemask.models.factory import (
    create_model,
    members,
    model_cfg,
    timm_net,
    wheel_weights_path,
)
from facemask.models.predict import predict_logits
from facemask.params import Params, TrainParams
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


def run_fold(
    cfg: Config,
    train: Split,
    valid: Split,
    test: Split,
    test_copies: np.ndarray,
    classes: list[str],
    tp: TrainParams,
    store_root,
    seed: int,
) -> dict:
    """Train one configuration on one fold; metrics on the held-out fold (one per copy)."""
    torch.manual_seed(seed)
    if cfg.mode == "frozen":
        tp = tp.model_copy(update={"finetune": tp.finetune.model_copy(update={"epochs": 0})})
    model, source = create_model(cfg.model, len(classes), cfg.weights == "pretrained")
    model = model.to(memory_format=torch.channels_last)
    history, seconds = transfer_learn(model, train, valid, tp, len(classes), store_root, seed)
    mcfg = timm_net(model).pretrained_cfg
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


def fold_key(
    params: Params,
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
    grid = getattr(params, section)
    shared = {"image_size": grid.image_size, "finetune_epochs": grid.finetune_epochs}
    spec = [params.seed, params.classes, params.train.model_dump(), params.cv.model_dump(), shared]
    # The code that computes a fold: a change to it makes every stored fold a miss.
    spec.append(code_fingerprint("facemask.training.compare"))
    where = fold if repeat == 0 else f"{repeat}:{fold}"
    h = hashlib.sha256(json.dumps([spec, config, where], sort_keys=True, default=str).encode())
    h.update(pd.util.hash_pandas_object(dev[["sha256", "label", "group"]]).values.tobytes())
    return h.hexdigest()[:20]


def run_cv_fold(
    cfg: Config,
    dev: pd.DataFrame,
    images: torch.Tensor,
    labels: torch.Tensor,
    folds: np.ndarray,
    f: int,
    classes: list[str],
    tp: TrainParams,
    store_root: Path,
    seed: int,
) -> dict:
    """Fit on every fold but `f` (an inner part of it for early stopping), score on `f`."""
    fit = (folds != f).nonzero()[0]
    inner = inner_split(dev.iloc[fit], seed + f)
    parts = [fit[~inner], fit[inner], (folds == f).nonzero()[0]]
    train, valid, test = (
        Split(images[i], labels[i], dev["sha256"].iloc[i].tolist()) for i in parts
    )
    copies = dev["copies"].to_numpy()[parts[2]]
    return run_fold(cfg, train, valid, test, copies, classes, tp, store_root, seed + f)


def fold_settings(train: TrainParams, image_size: int, finetune_epochs: int) -> TrainParams:
    """params.yaml's `train` section at the grid's image size and fine-tune length."""
    finetune = train.finetune.model_copy(update={"epochs": finetune_epochs})
    return train.model_copy(update={"image_size": image_size, "finetune": finetune})


def cross_validate(
    params: Params,
    section: str,
    dev: pd.DataFrame,
    images: torch.Tensor,
    grid: list[Config],
    done_dir: Path,
    store_root: Path,
) -> pd.DataFrame:
    """Every configuration of `grid` on every fold of every repeat: one row per fold.

    `dev` is train+valid (the test split stays untouched), `images` its decoded pixels.
    Each finished (configuration, fold) is stored in `done_dir` under its `fold_key` and
    reused, so an interrupted run resumes; features are cached under `store_root`.
    """
    cp, classes = getattr(params, section), list(params.classes)
    labels = torch.tensor([classes.index(c) for c in dev["label"]])
    tp = fold_settings(params.train, cp.image_size, cp.finetune_epochs)
    done_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(cp.repeats):
        # Repeats redraw the folds: k-fold figures move by a few errors with the draw.
        seed = params.seed + 100 * r
        folds = cv_folds(dev, params.cv.folds, seed)
        for cfg in grid:
            for f in range(folds.max() + 1):
                done = done_dir / f"{fold_key(params, cfg.name, f, dev, section, r)}.json"
                if done.is_file():
                    row = json.loads(done.read_text())
                else:
                    row = run_cv_fold(
                        cfg, dev, images, labels, folds, f, classes, tp, store_root, seed
                    )
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
    return pd.DataFrame(rows)
