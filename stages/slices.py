"""Stage slices: accuracy per slice (set, face size, brightness, blur, colour, attributes and
their intersections) with 95 % bootstrap intervals, over the test split and every external set.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from facemask.config import exit_on_error
from facemask.evaluation.charts import plot_slices
from facemask.evaluation.slice_report import FAMILIES, gather_predictions
from facemask.evaluation.slices import slice_summary, slice_table
from facemask.params import Params, load_stage_params, stage_params

SECTIONS = ("seed", "classes", "slices")


def main(
    params: Mapping | Params,
    test: Path,
    external: Path,
    table_csv: Path,
    summary_json: Path,
    plot: Path,
) -> dict:
    """Write the slice table (CSV, a DVC plot), its summary (metrics) and a picture."""
    params = stage_params(params, SECTIONS)
    sp = params.slices
    df = gather_predictions(test, external)
    pairs = [(a, b) for a, b in sp.intersections]  # params: two columns each
    table = slice_table(
        df,
        list(FAMILIES) + sorted(c for c in df.columns if c.startswith("attr_")),
        intersections=[p for p in pairs if all(c in df.columns for c in p)],
        classes=list(params.classes),
        min_count=sp.min_count,
        n_boot=sp.bootstrap,
        seed=params.seed,
    )
    summary = slice_summary(table)
    for path in (table_csv, summary_json, plot):
        path.parent.mkdir(parents=True, exist_ok=True)
    table.round(6).to_csv(table_csv, index=False, lineterminator="\n")
    summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    plot_slices(table, plot)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("test", type=Path, help="metrics/predictions.csv")
    parser.add_argument("external", type=Path, help="metrics/external_predictions")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--table", type=Path, default=Path("metrics/slices.csv"))
    parser.add_argument("--summary", type=Path, default=Path("metrics/slices.json"))
    parser.add_argument("--plot", type=Path, default=Path("plots/slices.png"))
    args = parser.parse_args()
    with exit_on_error("slices"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.test,
            args.external,
            args.table,
            args.summary,
            args.plot,
        )
