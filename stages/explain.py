"""Stage explain: what the model looks at (CAMs, occlusion, inside the net), how faithful
the CAMs are (ROAD, confidence change), and galleries of its doubts and mistakes."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from facemask.config import exit_on_error, seed_everything, tune_malloc
from facemask.explain.report import explain_model, join_split
from facemask.models.factory import load_model
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores


@dataclass
class Outputs:
    """Where the stage writes (all on the dvc.yaml cmd line)."""

    plots: Path  # folder of PNGs: they show faces, so DVC-cached
    metrics: Path  # JSON summary
    road: Path  # CSV: ROAD score per method, direction and percentile
    attention: Path  # CSV: lower-face share of CAM / occlusion mass per class
    weights: Path  # CSV: per-layer weight statistics
    low_confidence: Path  # CSV
    misclassified: Path  # CSV


SECTIONS = ("seed", "explain")


def main(
    params: Mapping | Params, model_path: Path, predictions_csv: Path, test_csv: Path, outs: Outputs
) -> dict:
    """Write the PNGs under outs.plots and the metrics and lists; return the metrics."""
    params = stage_params(params, SECTIONS)
    tune_malloc()
    use_free_cores()
    p, seed = params.explain, params.seed
    seed_everything(seed)
    clock = time.perf_counter()
    model, card = load_model(model_path)
    pred = join_split(pd.read_csv(predictions_csv), pd.read_csv(test_csv))
    for path in (outs.plots / "x", *vars(outs).values()):  # every output's folder
        path.parent.mkdir(parents=True, exist_ok=True)

    found = explain_model(model, card, pred, p, seed, outs.plots)
    found.low_confidence.to_csv(outs.low_confidence, index=False)
    found.misclassified.to_csv(outs.misclassified, index=False)
    found.road.to_csv(outs.road, index=False)
    found.attention.to_csv(outs.attention, index=False)
    found.weights.to_csv(outs.weights, index=False)
    outs.metrics.write_text(json.dumps(found.metrics, indent=2) + "\n")
    print(f"wrote {outs.plots}/ and {outs.metrics} in {time.perf_counter() - clock:.1f} s")
    return found.metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("test", type=Path, help="test split CSV (content hashes, groups)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--out", type=Path, default=Path("plots/explain"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/explain.json"))
    parser.add_argument("--road", type=Path, default=Path("metrics/explain_road.csv"))
    parser.add_argument("--attention", type=Path, default=Path("metrics/explain_attention.csv"))
    parser.add_argument("--weights", type=Path, default=Path("metrics/explain_weights.csv"))
    parser.add_argument("--low-confidence", type=Path, default=Path("metrics/low_confidence.csv"))
    parser.add_argument("--misclassified", type=Path, default=Path("metrics/misclassified.csv"))
    args = parser.parse_args()
    outs = Outputs(
        args.out,
        args.metrics,
        args.road,
        args.attention,
        args.weights,
        args.low_confidence,
        args.misclassified,
    )
    with exit_on_error("explain"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.model,
            args.predictions,
            args.test,
            outs,
        )
