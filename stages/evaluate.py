"""Stage evaluate: test-split metrics (scikit-learn) and predictions for DVC's confusion plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from facemask.config import load_params, tune_malloc
from facemask.evaluation.metrics import classification_metrics
from facemask.evaluation.predict import predict_frame
from facemask.models.factory import load_model


def main(
    params: dict, model_path: Path, test_csv: Path, metrics_json: Path, predictions_csv: Path
) -> dict:
    """Predict the test split, write metrics JSON and predictions CSV."""
    tune_malloc()
    model, card = load_model(model_path)
    df = pd.read_csv(test_csv)
    pred = predict_frame(model, card, df, params["evaluate"]["batch_size"])
    metrics = classification_metrics(pred["label"], pred["predicted"], card.classes)
    metrics["model"] = card.model
    if "published_label" in df and (df["published_label"] != df["label"]).any():
        # Reviews relabelled test pictures: say what the published labels give too.
        pub = classification_metrics(df["published_label"], pred["predicted"], card.classes)
        metrics["published_labels"] = {k: pub[k] for k in ("accuracy", "n", "errors")}
    for path in (metrics_json, predictions_csv):
        path.parent.mkdir(parents=True, exist_ok=True)
    pred.to_csv(predictions_csv, index=False, lineterminator="\n")
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: metrics[k] for k in ("accuracy", "n", "errors", "macro")}, indent=2))
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("test", type=Path, help="test split CSV")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/test.json"))
    parser.add_argument("--predictions", type=Path, default=Path("metrics/predictions.csv"))
    args = parser.parse_args()
    main(load_params(args.params), args.model, args.test, args.metrics, args.predictions)
