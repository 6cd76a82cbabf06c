"""Stage robustness: accuracy under controlled corruptions (downscale, blur, JPEG, noise,
brightness, contrast, grayscale) at several severities, on a fixed stratified test sample."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from facemask.config import exit_on_error, tune_malloc
from facemask.data.cache import decode_frame
from facemask.evaluation.charts import plot_robustness
from facemask.evaluation.predictions import predict_probs
from facemask.evaluation.robustness import (
    CORRUPTIONS,
    robustness_summary,
    robustness_table,
    stratified_sample,
)
from facemask.models.factory import load_model
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores

SECTIONS = ("seed", "evaluate", "robustness")


def main(
    params: Mapping | Params,
    model_path: Path,
    test_csv: Path,
    table_csv: Path,
    metrics_json: Path,
    plot: Path,
) -> dict:
    """Write accuracy per (corruption, severity), its summary (metrics) and a line plot."""
    params = stage_params(params, SECTIONS)
    tune_malloc()
    use_free_cores()
    rp = params.robustness
    unknown = sorted(set(rp.corruptions) - set(CORRUPTIONS))
    if unknown:  # a misspelled name would otherwise drop that corruption without a word
        raise ValueError(f"robustness.corruptions: unknown {unknown}; known: {list(CORRUPTIONS)}")
    model, card = load_model(model_path)
    df = pd.read_csv(test_csv)
    sample = df.iloc[stratified_sample(df, rp.sample, params.seed)].reset_index(drop=True)
    images = decode_frame(sample, card.image_size)
    labels = sample["label"].map(card.classes.index).to_numpy()
    corruptions = {k: v for k, v in CORRUPTIONS.items() if k in rp.corruptions}
    bs = params.evaluate.batch_size
    table = robustness_table(
        lambda x: predict_probs(model, card, x, bs).argmax(1),
        images,
        labels,
        corruptions,
        params.seed,
    )
    summary = {"sample": len(sample), **robustness_summary(table)}
    for path in (table_csv, metrics_json, plot):
        path.parent.mkdir(parents=True, exist_ok=True)
    table.round(6).to_csv(table_csv, index=False, lineterminator="\n")
    plot_robustness(table, plot)
    metrics_json.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("test", type=Path, help="test split CSV (published labels)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--table", type=Path, default=Path("metrics/robustness.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/robustness.json"))
    parser.add_argument("--plot", type=Path, default=Path("plots/robustness.png"))
    args = parser.parse_args()
    with exit_on_error("robustness"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.model,
            args.test,
            args.table,
            args.metrics,
            args.plot,
        )
