"""Stage evaluate: held-in test metrics on the published labels (the headline) and on the
reviewed labels beside them, calibration, ROC/PR curves and the answered part."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from facemask.config import exit_on_error, tune_malloc
from facemask.evaluation.calibration import reliability_table, risk_coverage, softmax
from facemask.evaluation.curves import pr_curves, roc_curves
from facemask.evaluation.metrics import classification_metrics
from facemask.evaluation.scorecard import frame_metrics, score_frame
from facemask.models.factory import load_model
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores

SECTIONS = ("evaluate",)


def main(
    params: Mapping | Params,
    model_path: Path,
    test_csv: Path,
    published_csv: Path,
    metrics_json: Path,
    predictions_csv: Path,
    curves: Path,
) -> dict:
    """Predict the test split as published, write metrics JSON, predictions and curve CSVs."""
    params = stage_params(params, SECTIONS)
    tune_malloc()
    use_free_cores()
    ev = params.evaluate
    model, card = load_model(model_path)
    published = pd.read_csv(published_csv)  # as drawn: pictures a review dropped included
    scored = score_frame(model, card, published, ev.batch_size, ev.tta)
    metrics = {"model": card.model, **frame_metrics(scored, card, ev.abstain)}
    # The reviewed labels, beside: the same predictions, reviewed pictures relabelled or gone.
    reviewed = pd.read_csv(test_csv)
    pred = scored.table.drop(columns="label").merge(reviewed[["path", "label"]], on="path")
    pred = pred[["path", "label", *[c for c in pred.columns if c not in ("path", "label")]]]
    rev = classification_metrics(pred["label"], pred["predicted"], card.classes)
    metrics["reviewed_labels"] = {
        **{k: rev[k] for k in ("accuracy", "n", "errors")},
        "macro_f1": rev["macro"]["f1"],
        "dropped": len(published) - len(pred),
        "relabelled": int((reviewed["label"] != reviewed["published_label"]).sum())
        if "published_label" in reviewed
        else 0,
    }
    probs = softmax(scored.logits, card.temperature)
    tables = {
        "reliability.csv": reliability_table(probs, scored.labels),
        "risk_coverage.csv": risk_coverage(probs, scored.labels),
        **{f"roc/{c}.csv": t for c, t in roc_curves(probs, scored.labels, card.classes).items()},
        **{f"pr/{c}.csv": t for c, t in pr_curves(probs, scored.labels, card.classes).items()},
    }
    for name, table in tables.items():
        (curves / name).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(curves / name, index=False, lineterminator="\n")
    for path in (metrics_json, predictions_csv):
        path.parent.mkdir(parents=True, exist_ok=True)
    pred.to_csv(predictions_csv, index=False, lineterminator="\n")
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: metrics[k] for k in ("accuracy", "n", "errors", "reviewed_labels")}))
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("test", type=Path, help="test split CSV (reviewed labels)")
    parser.add_argument("published", type=Path, help="test split as drawn (published labels)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/test.json"))
    parser.add_argument("--predictions", type=Path, default=Path("metrics/predictions.csv"))
    parser.add_argument("--curves", type=Path, default=Path("metrics/curves"))
    args = parser.parse_args()
    with exit_on_error("evaluate"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.model,
            args.test,
            args.published,
            args.metrics,
            args.predictions,
            args.curves,
        )
