"""Stage plots: confusion-matrix PNG and a Grad-CAM grid of correct and wrong test images."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.config import exit_on_error, tune_malloc
from facemask.data.cache import Normalize, decode_frame, to_tensor
from facemask.explain.cams import cam_layers, compute_cams
from facemask.explain.figures import plot_confusion
from facemask.explain.report import describe_prediction, pick_examples, plot_cam_grid
from facemask.models.factory import load_model
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores

SECTIONS = ("seed", "plots")


def main(
    params: Mapping | Params, model_path: Path, predictions_csv: Path, test_csv: Path, out: Path
) -> None:
    """Write out/confusion.png and out/gradcam.png."""
    params = stage_params(params, SECTIONS)
    tune_malloc()
    use_free_cores()
    p = params.plots
    model, card = load_model(model_path)
    pred = pd.read_csv(predictions_csv)
    out.mkdir(parents=True, exist_ok=True)
    acc = (pred["label"] == pred["predicted"]).mean()
    plot_confusion(
        pred["label"],
        pred["predicted"],
        card.classes,
        out / "confusion.png",
        f"{card.model} on test: accuracy {acc:.2%} (n={len(pred)})",
    )

    layers = cam_layers(p.target_layer, model, card.image_size)
    chosen = pick_examples(pred, card.classes, p.per_cell, params.seed)
    sha = pd.read_csv(test_csv).set_index("path")["sha256"]
    images = decode_frame(chosen.assign(sha256=sha.loc[chosen["path"]].to_numpy()), card.image_size)
    x = Normalize(card.mean, card.std)(to_tensor(images))
    # CAMs for the predicted class: what made the model say what it said.
    targets = [card.classes.index(c) for c in chosen["predicted"]]
    cams = (
        compute_cams(model, x, layers, targets, p.cam_method)
        if len(chosen)
        else np.zeros((0, card.image_size, card.image_size), np.float32)  # no examples
    )
    where = ", ".join(layers)
    title = f"{p.cam_method} on {card.model} at {where}, for the predicted class"
    grid = out / "gradcam.png"
    plot_cam_grid(chosen, images, cams, card.classes, p.per_cell, grid, title, describe_prediction)
    print(f"wrote {out / 'confusion.png'} and {grid} ({len(chosen)} CAMs at {where})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("test", type=Path, help="test split CSV (for content hashes)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--out", type=Path, default=Path("plots"))
    args = parser.parse_args()
    with exit_on_error("plots"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.model,
            args.predictions,
            args.test,
            args.out,
        )
