"""Stage loso (compare/dvc.yaml): leave-one-source-out accuracy of the default recipe."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from facemask.config import cache_dir, exit_on_error, seed_everything, tune_malloc
from facemask.data.split import SPLITS
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores
from facemask.training.loso import leave_one_source_out, loso_summary

SECTIONS = ("seed", "model", "classes", "train")


def main(params: Mapping | Params, splits: Path, table_csv: Path, summary_json: Path) -> dict:
    """Write one row per left-out source and the mean / worst over them."""
    params = stage_params(params, SECTIONS)
    tune_malloc()
    use_free_cores()
    seed_everything(params.seed)
    frames = {s: pd.read_csv(splits / f"{s}.csv") for s in SPLITS}
    table = leave_one_source_out(frames, params, cache_dir() / "features")
    summary = loso_summary(table)
    for path in (table_csv, summary_json):
        path.parent.mkdir(parents=True, exist_ok=True)
    table.round(6).to_csv(table_csv, index=False, lineterminator="\n")
    summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("splits", type=Path)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--table", type=Path, default=Path("leaderboard/loso/loso.csv"))
    parser.add_argument("--summary", type=Path, default=Path("leaderboard/loso/loso.json"))
    args = parser.parse_args()
    with exit_on_error("loso"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.splits,
            args.table,
            args.summary,
        )
