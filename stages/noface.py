"""Stage noface (detect/dvc.yaml): fit the no-face re-scorer on the training scenes' boxes,
choose its face-probability threshold on the validation scenes (best F1 of found-and-right
against kept boxes on a labelled face), and save it tied to the classifier it reads."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facemask.config import exit_on_error
from facemask.detection.mining import load_train_valid
from facemask.detection.noface import candidates, file_sha256, fit_noface, sweep
from facemask.params import DetectParams, Params, load_stage_params, stage_params
from facemask.serving.engines import load_engine

SECTIONS = ("seed", "scenes")
DETECTOR_ONLY = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]  # YuNet's own thresholds, for comparison


def main(
    params: Mapping | Params,
    detect: DetectParams,
    candidates_path: Path,
    model_path: Path,
    out: Path,
    metrics_json: Path,
    sweep_csv: Path,
) -> dict:
    from sklearn.metrics import roc_auc_score

    params = stage_params(params, SECTIONS)
    classes = load_engine(model_path, "torch").card.classes
    train, valid = load_train_valid(candidates_path)
    rows = candidates(train, detect.face_iou)
    scorer = fit_noface(rows, detect.inputs, detect.c, params.seed)
    probs = [scorer.face_probs(r.scores, r.boxes, r.probs, r.features) for r in valid]
    cmap = params.scenes.classes
    table = sweep(valid, probs, cmap, classes, detect.operating_points)
    best = max(table, key=lambda row: row["f1"])
    scorer.threshold = best["threshold"]
    scorer.detector = detect.model_dump(include={"detector", "threshold", "upscale"})
    scorer.model_sha256 = file_sha256(model_path)
    scorer.save(out)
    held = candidates(valid, detect.face_iou)
    metrics: dict[str, Any] = {
        "train": _counts(train, rows),
        "valid": {
            **_counts(valid, held),
            "auc": round(float(roc_auc_score(held["face"], np.concatenate(probs))), 4),
        },
        "chosen": best,
        "detector_only": sweep(valid, [r.scores for r in valid], cmap, classes, DETECTOR_ONLY),
    }
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    sweep_csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table).to_csv(sweep_csv, index=False)
    print(
        f"re-scorer: valid AUC {metrics['valid']['auc']}, threshold {best['threshold']}:"
        f" found and right {best['found_and_right']}, {best['false_boxes_per_scene']} false"
        " boxes a scene"
    )
    return metrics


def _counts(results: list, rows: Mapping[str, np.ndarray]) -> dict:
    return {
        "scenes": len(results),
        "boxes": len(rows["face"]),
        "faces": int(rows["face"].sum()),
        "non_faces": int((~rows["face"]).sum()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", type=Path)
    parser.add_argument("--model", type=Path, default=Path("models/model.safetensors"))
    parser.add_argument("--out", type=Path, default=Path("models/noface.safetensors"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/detect/noface.json"))
    parser.add_argument("--sweep", type=Path, default=Path("metrics/detect/noface_sweep.csv"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    args = parser.parse_args()
    with exit_on_error("noface"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            load_stage_params(args.params, ["detect"], args.task).detect,
            args.candidates,
            args.model,
            args.out,
            args.metrics,
            args.sweep,
        )
