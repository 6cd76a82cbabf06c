"""Stage export_detector (detect/dvc.yaml): the trained face detector to ONNX, checked
against PyTorch on validation scenes (scores at every point, boxes kept at its threshold);
the stage fails above export.tolerance. ONNX Runtime's time per scene, 1 thread."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from facemask.config import exit_on_error, tune_malloc
from facemask.data.images import open_image
from facemask.data.scenes import list_scenes, read_scene_ids
from facemask.detection.fcos import load_fcos, to_canvas, view_scale
from facemask.detection.fcos_export import OnnxHead, detector_parity, export_detector_onnx
from facemask.params import Params, load_stage_params, stage_params
from facemask.serving.export import ParityError

SECTIONS = ("export",)


def main(
    params: Mapping | Params, detector: Path, root: Path, scenes_csv: Path, count: int,
    out: Path, metrics_json: Path,
) -> dict:  # fmt: skip
    params = stage_params(params, SECTIONS)
    tune_malloc()
    torch.set_num_threads(1)
    model, meta = load_fcos(detector)
    p = meta["params"]
    ids = read_scene_ids(scenes_csv)
    listed, _ = list_scenes(root, None, "auto")
    picked = [s for s in listed if s.image.stem in ids][:count]
    if not picked:
        raise ValueError(f"{scenes_csv}: none of its scenes is in {root}")
    pictures = [np.asarray(open_image(s.image)[0]) for s in picked]
    export_detector_onnx(model, out)
    parity = detector_parity(model, out, pictures, p["upscale"], p["max_side"], meta["threshold"])
    head, times = OnnxHead(out, model), []
    for rgb in pictures:
        h, w = rgb.shape[:2]
        t0 = time.perf_counter()
        canvas, size = to_canvas(rgb, view_scale(h, w, p["upscale"], p["max_side"]), model.mean)
        head.detect(canvas, size)
        times.append(time.perf_counter() - t0)
    metrics = {
        **parity,
        "onnx_ms_per_scene_1_thread": round(1000 * float(np.median(times)), 1),
        "onnx_mb": round(out.stat().st_size / 1e6, 2),
        "threshold": meta["threshold"],
    }
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    tol = params.export.tolerance
    if parity["max_score_difference"] > tol or parity["max_box_count_difference"]:
        raise ParityError(
            f"{out}: ONNX differs from PyTorch (scores by {parity['max_score_difference']:.2g},"
            f" tolerance {tol}; kept boxes by {parity['max_box_count_difference']})"
        )
    print(
        f"detector ONNX: score difference {parity['max_score_difference']:.2g}, boxes"
        f" {parity['max_box_difference_px']:.2g} px on {parity['pictures']} scenes;"
        f" {metrics['onnx_ms_per_scene_1_thread']} ms a scene (1 thread)"
    )
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("detector", type=Path)
    parser.add_argument("scenes", type=Path, help="the scene folder the parity pictures come from")
    parser.add_argument("--split", type=Path, default=Path("data/splits/valid.csv"))
    parser.add_argument("--count", type=int, default=20, help="parity scenes")
    parser.add_argument("--out", type=Path, default=Path("models/detector.onnx"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/detect/detector_export.json"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    args = parser.parse_args()
    with exit_on_error("export_detector"):
        main(
            load_stage_params(args.params, SECTIONS, args.task), args.detector, args.scenes,
            args.split, args.count, args.out, args.metrics,
        )  # fmt: skip
