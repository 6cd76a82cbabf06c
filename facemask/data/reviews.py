"""Reviewed label decisions (keep, relabel or drop), applied by the split stage.

Public data sets carry label errors. The audit (facemask.training.audit) lists the
pictures worth a look; a person records each decision in a reviews CSV, and this module
applies them. Nothing is relabelled automatically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

DROP = "drop"  # a review's label that removes the picture (neither class fits it)
REVIEW_COLUMNS = ("sha256", "label", "reason")
# The audit's list (metrics/label_audit.csv) that reviews are made from, in this order.
AUDIT_COLUMNS = (
    "path", "sha256", "split", "label", "published_label",
    "self_confidence", "predicted", "issue", "reviewed",
)  # fmt: skip


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
    files: Mapping[str, str] | None, index: pd.DataFrame, classes: list[str]
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
