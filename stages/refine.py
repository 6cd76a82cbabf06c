"""Stage refine (detect/dvc.yaml): fit YuNet's box refiner on the training scenes' boxes
(stage candidates: YuNet at its floor) and score it on the validation scenes' before and
after: mean IoU of the matched boxes, the share of labelled faces matched at IoU 0.5, and
face AP@0.5 (class-agnostic, ranked by YuNet's score)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from facemask.config import exit_on_error
from facemask.detection.mining import load_train_valid
from facemask.detection.refine import (
    SIDES,
    TERMS,
    box_scores,
    fit_box_refiner,
    matched_pairs,
    refine_results,
)
from facemask.params import DetectParams, load_stage_params


def main(candidates: Path, detect: DetectParams, out: Path, metrics_json: Path) -> dict:
    """Fit on the `train` scenes of `candidates`, pairing boxes and faces at detect.face_iou
    (the re-scorer's notion of a box on a face), and score on its `valid` scenes."""
    train, valid = load_train_valid(candidates)
    settings = detect.model_dump(include={"detector", "threshold", "upscale"})
    refiner = fit_box_refiner(train, detect.face_iou, settings)
    refiner.save(out)
    boxes, scores, _, _ = matched_pairs(train, detect.face_iou)
    mean = refiner.offsets(boxes, scores).mean(0)  # what the terms add up to, on average
    metrics: dict[str, Any] = {
        "detector": settings,
        "pairs": refiner.pairs,
        "offsets": {t: dict(zip(SIDES, np.round(w, 4).tolist(), strict=True))
                    for t, w in zip(TERMS, refiner.weights, strict=True)},
        "mean_offsets": dict(zip(SIDES, np.round(mean, 4).tolist(), strict=True)),
    }  # fmt: skip
    for name, part in (("train", train), ("valid", valid)):
        metrics[name] = {
            "scenes": len(part),
            "before": box_scores(part, detect.face_iou),
            "after": box_scores(refine_results(part, refiner), detect.face_iou),
        }
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    before, after = metrics["valid"]["before"], metrics["valid"]["after"]
    print(
        f"box refiner from {refiner.pairs} training boxes; valid scenes: mean IoU"
        f" {before['mean_iou']} -> {after['mean_iou']}, face AP@0.5 {before['face_ap50']}"
        f" -> {after['face_ap50']}"
    )
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", type=Path, help="stage candidates' .npz")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--out", type=Path, default=Path("models/box_refiner.json"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/detect/refine.json"))
    args = parser.parse_args()
    with exit_on_error("refine"):
        main(
            args.candidates,
            load_stage_params(args.params, ["detect"], args.task).detect,
            args.out,
            args.metrics,
        )
