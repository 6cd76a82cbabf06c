"""Stage external: score the trained model on each external test set (evaluate.external).

Pictures that are copies of train or valid pictures are removed first and counted, so the
figure is never flattered. Writes metrics/external/<name>.json (the keys of test.json) and
metrics/external_predictions/<name>.csv.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from facemask.config import exit_on_error, tune_malloc
from facemask.data.external import seen_in_training, unique_pictures
from facemask.evaluation.scorecard import frame_metrics, score_frame
from facemask.models.factory import load_model
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores

SECTIONS = ("evaluate", "prepare")


def main(
    params: Mapping | Params,
    model_path: Path,
    external: Path,
    splits: Path,
    metrics: Path,
    predictions: Path,
) -> dict:
    """Score every external set; return {name: metrics}."""
    params = stage_params(params, SECTIONS)
    tune_malloc()
    use_free_cores()
    model, card = load_model(model_path)
    seen = pd.concat([pd.read_csv(splits / f"{s}.csv") for s in ("train", "valid")])
    out = {}
    metrics.mkdir(parents=True, exist_ok=True)  # DVC wants both outputs even with no set
    predictions.mkdir(parents=True, exist_ok=True)
    ev = params.evaluate
    for spec in ev.external:
        name = spec.name
        index = pd.read_csv(external / f"{name}.csv")
        unique = unique_pictures(index)
        overlap = seen_in_training(unique, seen, params.prepare.near_duplicate_distance)
        kept = unique[~overlap].reset_index(drop=True)
        scored = score_frame(model, card, kept, ev.batch_size, ev.tta)
        pred = scored.table
        result = {
            **frame_metrics(scored, card, ev.abstain),
            "copies_removed": len(index) - len(unique),
            "overlap_removed": int(overlap.sum()),
        }
        out[name] = result
        (metrics / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        pred.to_csv(predictions / f"{name}.csv", index=False, lineterminator="\n")
        print(
            f"{name}: accuracy {result['accuracy']:.4f} on {result['n']} pictures "
            f"({result['overlap_removed']} seen in train/valid removed)"
        )
    if not ev.external:  # git keeps no empty folder: a teammate's pull would miss both outputs
        for folder in (metrics, predictions):
            (folder / ".gitkeep").write_text("")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("external", type=Path, help="data/external (stage external_data)")
    parser.add_argument("splits", type=Path, help="data/splits: train and valid are 'seen'")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/external"))
    parser.add_argument("--predictions", type=Path, default=Path("metrics/external_predictions"))
    args = parser.parse_args()
    with exit_on_error("external"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.model,
            args.external,
            args.splits,
            args.metrics,
            args.predictions,
        )
