"""Label quality: reviewed label decisions, and an audit that finds the labels worth a look.

Public data sets carry label errors. The audit ranks every picture by how little a model
trained without it believes its label (out-of-fold, confident learning via cleanlab); a
person looks at the pictures it lists and records each decision in a reviews CSV (keep,
relabel or drop), which the split stage applies. Nothing is relabelled automatically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit
from torch import nn

from facemask.split import group_folds
from facemask.train import class_weights, fit_head, head_settings

DROP = "drop"  # a review's label that removes the picture (neither class fits it)
REVIEW_COLUMNS = ("sha256", "label", "reason")


def read_label_reviews(path: Path, classes: list[str], source: str | None = None) -> pd.DataFrame:
    """Reviewed pictures: one row each (sha256), the label decided (a class or `drop`), why.

    A label equal to the published one records "reviewed, label kept". `source` limits the
    reviews to that source's pictures. Adds `file` and `line` for error messages.
    """
    reviews = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REVIEW_COLUMNS if c not in reviews.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (needs {list(REVIEW_COLUMNS)})")
    reviews = reviews.assign(file=str(path), line=range(2, len(reviews) + 2))  # after header
    for row in reviews.itertuples():
        if row.label not in [*classes, DROP]:
            raise ValueError(
                f"{path} line {row.line}: label {row.label!r} is not one of {[*classes, DROP]}"
            )
        if not row.reason.strip():
            raise ValueError(f"{path} line {row.line}: a review needs a reason (what it shows)")
    dup = reviews[reviews["sha256"].duplicated()]
    if len(dup):
        raise ValueError(f"{path} line {dup['line'].iloc[0]}: sha256 is listed twice")
    if source is not None:
        reviews["source"] = source
    return reviews


def load_label_reviews(
    files: dict[str, str] | None, index: pd.DataFrame, classes: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """The reviews of every source the index holds, and the named sources it does not hold.

    `files` maps a source name to its reviews CSV (params.yaml `split.label_reviews`). A
    source that is not in the index (another data set, or a misspelt name) is returned in the
    second list rather than read: a preset that swaps the data keeps working.
    """
    in_use = set(index["source"]) if "source" in index else set()
    files = files or {}
    reviews = [read_label_reviews(Path(f), classes, s) for s, f in files.items() if s in in_use]
    skipped = sorted(s for s in files if s not in in_use)
    if not reviews:
        return pd.DataFrame(columns=[*REVIEW_COLUMNS, "source", "file", "line"]), skipped
    return pd.concat(reviews, ignore_index=True), skipped


def _rows_of(index: pd.DataFrame, review: dict) -> np.ndarray:
    """Rows a review decides: its picture (sha256, in its source) and all that picture's copies."""
    same_source = index["source"] == review["source"] if "source" in review else True
    hit = (index["sha256"] == review["sha256"]) & same_source
    if "copies" in index:  # resized copies carry the same label: the decision follows them
        hit = index["copies"].isin(index.loc[hit, "copies"]) & same_source
    return np.asarray(hit, dtype=bool)


def _where(review: dict) -> str:
    return f"{review.get('file', 'label reviews')} line {review.get('line', '?')}"


def reviewed_mask(index: pd.DataFrame, reviews: pd.DataFrame) -> np.ndarray:
    """Rows some review has decided (their picture or a copy of it was looked at)."""
    mask = np.zeros(len(index), dtype=bool)
    for rev in reviews.to_dict("records"):
        mask |= _rows_of(index, rev)
    return mask


def apply_label_reviews(
    index: pd.DataFrame, reviews: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Index with each reviewed decision applied to its picture and all that picture's copies.

    Adds `published_label` (what the source says) and, in memory, `label_review` (the reason,
    where a person reviewed the picture); `drop` removes the rows. Returns rows per action.
    """
    out = index.assign(published_label=index["label"], label_review="")
    counts = {"relabelled": 0, "kept": 0, "dropped": 0}
    decided_by = np.full(len(out), "", dtype=object)
    drop = np.zeros(len(out), dtype=bool)
    for rev in reviews.to_dict("records"):
        rows = _rows_of(out, rev)
        if not rows.any():
            where = f" ({rev['path']})" if rev.get("path") else ""
            of = f" of source {rev['source']!r}" if "source" in rev else ""
            raise ValueError(
                f"{_where(rev)}: sha256 {rev['sha256'][:16]}...{where} "
                f"matches no image{of} in the index"
            )
        if decided_by[rows].any():
            other = next(d for d in decided_by[rows] if d)
            raise ValueError(
                f"{_where(rev)}: decides the same picture (or a copy of it) as {other}; "
                "keep one decision per picture"
            )
        decided_by[rows] = _where(rev)
        if rev["label"] == DROP:
            drop |= rows
            counts["dropped"] += int(rows.sum())
            continue
        changed = (out.loc[rows, "label"] != rev["label"]).to_numpy()
        counts["relabelled"] += int(changed.sum())
        counts["kept"] += int((~changed).sum())
        out.loc[rows, "label"] = rev["label"]
        out.loc[rows, "label_review"] = rev["reason"]
    return out[~drop].reset_index(drop=True), counts


def out_of_fold_probs(
    df: pd.DataFrame,
    features: torch.Tensor,
    n_folds: int,
    classes: list[str],
    head: dict,
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
    cols = [c for c in ("path", "sha256", "split", "label", "published_label") if c in df]
    out = df.loc[first, cols].reset_index(drop=True)
    out["self_confidence"] = p[np.arange(len(y)), y].round(6)
    out["predicted"] = [classes[i] for i in p.argmax(1)]
    out["issue"] = issue
    out["reviewed"] = reviewed[first] if reviewed is not None else False
    return out.sort_values(["self_confidence", "path"], kind="stable").reset_index(drop=True)
