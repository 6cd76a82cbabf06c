"""The split stage's tables: the split drawn on the published labels, then the label reviews
applied and, in evaluation, one row per picture; with the counts and the leak check.

Apart from facemask.data.split because that module's folds serve stages that never read
reviews (compare, loso): importing reviews there would make them depend on reviews.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from facemask.data.reviews import apply_label_reviews, load_label_reviews
from facemask.data.split import SPLITS, cross_split_leaks, split_index


@dataclass
class Splits:
    """What the split stage writes."""

    published_test: pd.DataFrame  # the test split as drawn, labels as the sources give them
    parts: dict[str, pd.DataFrame]  # train, valid, test: reviews applied, `label_review` too
    report: dict


def pictures(df: pd.DataFrame) -> int:
    """Distinct pictures: resized copies of one picture count once."""
    return int(df["copies"].nunique()) if "copies" in df else len(df)


def make_splits(
    index: pd.DataFrame,
    valid: float,
    test: float,
    seed: int,
    classes: Sequence[str],
    *,
    unique_eval: bool,
    label_reviews: Mapping[str, str] | None,
    near_duplicate_distance: int,
) -> Splits:
    """Draw train/valid/test from the index, apply the label reviews, count and check leaks.

    `unique_eval` keeps one copy of each picture in valid and test; `label_reviews` maps a
    source to its reviews CSV (params.yaml `split.label_reviews`).
    """
    # Drawn on the published labels, so a review never moves a picture to another split.
    index = index.assign(split=split_index(index, valid, test, seed))
    drawn = {name: pictures(index[index["split"] == name]) for name in SPLITS}
    # The test split as drawn, on the published labels: the headline figure counts the
    # pictures a review dropped or relabelled as their source labels them.
    published = index[index["split"] == "test"].drop(columns="split")
    if unique_eval:
        published = published.drop_duplicates("copies")
    reviews, skipped = load_label_reviews(label_reviews, index, list(classes))
    index, reviewed = apply_label_reviews(index, reviews)
    parts = {name: index[index["split"] == name].drop(columns="split") for name in SPLITS}
    parts, dropped = one_copy_in_eval(parts) if unique_eval else (parts, {})
    report = split_report(index, parts, drawn, near_duplicate_distance)
    report["duplicates_dropped_from_eval"] = dropped
    report["label_reviews"] = reviewed  # rows per decision, copies included
    # Named in split.label_reviews but not in the data (another data set, or a typo).
    report["label_reviews_skipped_sources"] = skipped
    return Splits(published, parts, report)


def one_copy_in_eval(
    parts: Mapping[str, pd.DataFrame],
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """The parts with one row per picture (`copies`) in valid and test, and the rows dropped."""
    # Copies of one picture are one test case: six resized copies of a mislabelled
    # photo would otherwise count as six errors. Training keeps every copy.
    out, dropped = dict(parts), {}
    for name in ("valid", "test"):
        unique = out[name].drop_duplicates("copies")
        dropped[name] = len(out[name]) - len(unique)
        out[name] = unique
    return out, dropped


def split_report(
    index: pd.DataFrame,
    parts: Mapping[str, pd.DataFrame],
    drawn: Mapping[str, int],
    near_duplicate_distance: int,
) -> dict:
    """Per split: rows, share, classes and what the reviews did; and the leaks across splits.

    `index` is the reviewed index (with `split`), `drawn` the pictures per split as drawn.
    """
    report = {
        name: {
            "n": len(part),
            "fraction": round(len(part) / max(len(index), 1), 4),
            "per_class": part["label"].value_counts().sort_index().to_dict(),
            "label_reviews": {  # pictures (copies count once)
                "relabelled": pictures(part[part["label"] != part["published_label"]]),
                "kept": pictures(
                    part[(part["label_review"] != "") & (part["label"] == part["published_label"])]
                ),
                "dropped": drawn[name] - pictures(index[index["split"] == name]),
            },
        }
        for name, part in parts.items()
    }
    report["leaks"] = cross_split_leaks(dict(parts), near_duplicate_distance)
    return report
