"""Stage split: stratified, duplicate-group-aware train/valid/test CSVs, plus a leakage check."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from facemask.config import load_params
from facemask.data.reviews import apply_label_reviews, load_label_reviews
from facemask.data.split import SPLITS, cross_split_leaks, split_index


def pictures(df: pd.DataFrame) -> int:
    """Distinct pictures: resized copies of one picture count once."""
    return int(df["copies"].nunique()) if "copies" in df else len(df)


def main(params: dict, index_csv: Path, out: Path, report_json: Path) -> dict:
    """Write out/{train,valid,test}.csv and a report with counts and leak checks."""
    s = params["split"]
    index = pd.read_csv(index_csv)
    # Drawn on the published labels, so a review never moves a picture to another split.
    index["split"] = split_index(index, s["valid"], s["test"], params["seed"])
    drawn = {name: pictures(index[index["split"] == name]) for name in SPLITS}
    out.mkdir(parents=True, exist_ok=True)
    # The test split as drawn, on the published labels: the headline figure counts the
    # pictures a review dropped or relabelled as their source labels them.
    published = index[index["split"] == "test"].drop(columns="split")
    if s["unique_eval"]:
        published = published.drop_duplicates("copies")
    published.to_csv(out / "test_published.csv", index=False, lineterminator="\n")
    reviews, skipped = load_label_reviews(s.get("label_reviews"), index, list(params["classes"]))
    index, reviewed = apply_label_reviews(index, reviews)
    parts = {name: index[index["split"] == name].drop(columns="split") for name in SPLITS}
    dropped = {}
    if s["unique_eval"]:
        # Copies of one picture are one test case: six resized copies of a mislabelled
        # photo would otherwise count as six errors. Training keeps every copy.
        for name in ("valid", "test"):
            unique = parts[name].drop_duplicates("copies")
            dropped[name] = len(parts[name]) - len(unique)
            parts[name] = unique
    for name, part in parts.items():
        # Reasons stay out of the split files: editing one, or recording "looked, label
        # stands", must not rerun training.
        part.drop(columns="label_review").to_csv(
            out / f"{name}.csv", index=False, lineterminator="\n"
        )
    near = params["prepare"]["near_duplicate_distance"]
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
    report["leaks"] = cross_split_leaks(parts, near)
    report["duplicates_dropped_from_eval"] = dropped
    report["label_reviews"] = reviewed  # rows per decision, copies included
    # Named in split.label_reviews but not in the data (another data set, or a typo).
    report["label_reviews_skipped_sources"] = skipped
    report_json.parent.mkdir(parents=True, exist_ok=True)
    report_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2, sort_keys=True))
    if any(report["leaks"].values()):
        raise RuntimeError(f"duplicates span splits: {report['leaks']}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("index", type=Path)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/splits"))
    parser.add_argument("--report", type=Path, default=Path("metrics/split.json"))
    args = parser.parse_args()
    main(load_params(args.params), args.index, args.out, args.report)
