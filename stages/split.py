"""Stage split: stratified, duplicate-group-aware train/valid/test CSVs, plus a leakage check."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from facemask.config import exit_on_error
from facemask.data.reviewed_split import make_splits
from facemask.params import Params, load_stage_params, stage_params

SECTIONS = ("seed", "classes", "split", "prepare")


def main(params: Mapping | Params, index_csv: Path, out: Path, report_json: Path) -> dict:
    """Write out/{train,valid,test}.csv and a report with counts and leak checks."""
    params = stage_params(params, SECTIONS)
    s = params.split
    splits = make_splits(
        pd.read_csv(index_csv),
        s.valid,
        s.test,
        params.seed,
        list(params.classes),
        unique_eval=s.unique_eval,
        label_reviews=s.label_reviews,
        near_duplicate_distance=params.prepare.near_duplicate_distance,
    )
    out.mkdir(parents=True, exist_ok=True)
    splits.published_test.to_csv(out / "test_published.csv", index=False, lineterminator="\n")
    for name, part in splits.parts.items():
        # Reasons stay out of the split files: editing one, or recording "looked, label
        # stands", must not rerun training.
        part.drop(columns="label_review").to_csv(
            out / f"{name}.csv", index=False, lineterminator="\n"
        )
    report = splits.report
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
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--out", type=Path, default=Path("data/splits"))
    parser.add_argument("--report", type=Path, default=Path("metrics/split.json"))
    args = parser.parse_args()
    with exit_on_error("split"):
        main(load_stage_params(args.params, SECTIONS, args.task), args.index, args.out, args.report)
