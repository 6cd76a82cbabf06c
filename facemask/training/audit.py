"""Label audit: the labels worth a look, found out-of-fold with confident learning.

The audit ranks every picture by how little a linear head trained without it believes its
label (cleanlab's confident learning on out-of-fold probabilities). It changes no label: a
person reviews what it lists (facemask.data.reviews).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit
from torch import nn

from facemask.data.cache import Split, load_split
from facemask.data.reviews import AUDIT_COLUMNS
from facemask.data.split import SPLITS, group_folds
from facemask.params import HeadParams
from facemask.training.features import FeatureSource, frozen_features
from facemask.training.train import class_weights, fit_head, head_settings


def split_features(
    splits: Path,
    classes: list[str],
    size: int,
    sources: list[FeatureSource],
    batch_size: int,
    flip: bool,
    bf16: bool = False,
) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor | None]:
    """Every split's rows (with a `split` column) and their frozen features, and those of
    the mirrored images when `flip`. One split's pixels in memory at a time."""
    frames, features, flipped = [], [], []
    for name in SPLITS:
        df, x, y = load_split(splits / f"{name}.csv", classes, size)
        split = Split(x, y, df["sha256"].tolist())
        frames.append(df.assign(split=name))
        features.append(frozen_features(sources, split, batch_size, bf16=bf16))
        if flip:
            flipped.append(frozen_features(sources, split, batch_size, True, bf16))
    df = pd.concat(frames, ignore_index=True)
    return df, torch.cat(features), torch.cat(flipped) if flipped else None


def out_of_fold_probs(
    df: pd.DataFrame,
    features: torch.Tensor,
    n_folds: int,
    classes: list[str],
    head: HeadParams,
    flipped: torch.Tensor | None = None,
    class_weight_mode: str | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Class probabilities of each row from a linear head trained on the other folds.

    Folds are group-aware over every row of `df` (copies and scenes stay together).
    `head` is params.yaml's `train.head`; `flipped` holds the mirrored images' features
    (extra training views, as the train stage uses them). Early stopping watches a tenth
    of the training folds, whole groups, never the held-out fold.
    """
    labels = torch.tensor([classes.index(c) for c in df["label"]])
    folds = group_folds(df, n_folds, seed)
    probs = np.zeros((len(df), len(classes)), dtype=np.float32)
    for k in range(folds.max() + 1):
        fit = np.flatnonzero(folds != k)
        # Unstratified but 50x cheaper than a stratified group split (~2 s a call here).
        gss = GroupShuffleSplit(n_splits=1, test_size=0.1, random_state=seed + k)
        keep, stop = next(gss.split(fit, groups=df["group"].iloc[fit]))
        train_idx, stop_idx = torch.from_numpy(fit[keep]), torch.from_numpy(fit[stop])
        x, y = features[train_idx], labels[train_idx]
        if flipped is not None:
            x, y = torch.cat([x, flipped[train_idx]]), torch.cat([y, y])
        torch.manual_seed(seed + k)
        linear = nn.Linear(features.shape[1], len(classes))
        fit_head(
            linear,
            x,
            y,
            features[stop_idx],
            labels[stop_idx],
            class_weight=class_weights(labels[train_idx], len(classes), class_weight_mode),
            **head_settings(head),
        )
        held = folds == k
        with torch.no_grad():
            probs[held] = linear(features[torch.from_numpy(held)]).softmax(1).numpy()
    return probs


def label_issues(
    df: pd.DataFrame, probs: np.ndarray, classes: list[str], reviewed: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per picture (copies collapsed), least-believed label first.

    `self_confidence` is the out-of-fold probability of the given label; `issue` marks what
    cleanlab's confident learning flags (per-class thresholds, not one global cut-off);
    `reviewed` marks rows a person has already decided (`reviewed_mask`).
    """
    from cleanlab.filter import find_label_issues

    given = np.array([classes.index(c) for c in df["label"]])
    key = df["copies"] if "copies" in df else pd.Series(np.arange(len(df)))
    first = ~key.duplicated().to_numpy()
    # Copies share a fold and a prediction; counting each would weigh a picture by its copies.
    p = probs[first]  # softmax rows: they sum to 1 already
    y = given[first]
    issue = find_label_issues(y, p, filter_by="prune_by_noise_rate", n_jobs=1)
    out = df.loc[first, [c for c in AUDIT_COLUMNS if c in df]].reset_index(drop=True)
    out["self_confidence"] = p[np.arange(len(y)), y].round(6)
    out["predicted"] = [classes[i] for i in p.argmax(1)]
    out["issue"] = issue
    out["reviewed"] = reviewed[first] if reviewed is not None else False
    out = out[[c for c in AUDIT_COLUMNS if c in out]]
    return out.sort_values(["self_confidence", "path"], kind="stable").reset_index(drop=True)


def find_suspects(table: pd.DataFrame) -> pd.Series:
    """Pictures worth a look: flagged by cleanlab or predicted otherwise out of fold.

    cleanlab's flags are few and strict; every out-of-fold error is worth a look too.
    """
    return table["issue"] | (table["predicted"] != table["label"])


def summarize_audit(table: pd.DataFrame, suspect: pd.Series) -> dict:
    """Counts for metrics/audit.json: errors, flags, and what is left to review per split."""
    wrong = table["predicted"] != table["label"]
    todo = suspect & ~table["reviewed"]
    return {
        "pictures": len(table),
        "out_of_fold_accuracy": round(1 - float(wrong.mean()), 5),
        "out_of_fold_errors": int(wrong.sum()),
        "flagged": int(table["issue"].sum()),  # by cleanlab
        "to_review": int(todo.sum()),  # flagged or out-of-fold errors, not yet reviewed
        "to_review_per_split": {s: int((todo & (table["split"] == s)).sum()) for s in SPLITS},
        "reviewed": int(table["reviewed"].sum()),
        "relabelled": int((table["label"] != table["published_label"]).sum()),
    }
