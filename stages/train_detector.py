"""Stage train_detector (detect/dvc.yaml): train the face detector (FCOS over a pyramid on a
frozen MobileNetV2) on the training split's scenes, from cached features of a few augmented
views each; choose its score threshold by F1 on the validation split's scenes; save it."""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.config import exit_on_error, seed_everything, tune_malloc
from facemask.data.images import open_image
from facemask.data.scenes import list_scenes, read_scene_ids
from facemask.detection.fcos import (
    FaceFCOS,
    TrainedFaceDetector,
    create_body,
    save_fcos,
    scene_views,
    train_fcos,
)
from facemask.detection.operating import detect_scenes, threshold_sweep
from facemask.detection.scoring import SceneResult, map50
from facemask.params import FcosParams, Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores
from facemask.training.live import epoch_logger, finish, open_live

LOSSES = ("classification", "bbox_regression", "bbox_ctrness")  # FCOS's, per epoch

SECTIONS = ("seed", "scenes")


def _pictures(scenes: list) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for s in scenes:
        img, _ = open_image(s.image)
        truth = np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in s.boxes], np.float64)
        out.append((np.asarray(img), truth.reshape(-1, 4)))
    return out


def main(
    params: Mapping | Params,
    p: FcosParams,
    root: Path,
    train_csv: Path,
    valid_csv: Path,
    out: Path,
    live_dir: Path,
    sweep_csv: Path,
) -> dict:
    """Train, choose the threshold, save; the per-epoch losses and the summary go to the
    DVCLive folder `live_dir` (metrics.json, plots/)."""
    params = stage_params(params, SECTIONS)
    tune_malloc()
    threads = use_free_cores()
    listed, bad = list_scenes(root, None, "auto")
    picked = {}
    for name, csv in (("train", train_csv), ("valid", valid_csv)):
        ids = read_scene_ids(csv)
        picked[name] = [s for s in listed if s.image.stem in ids]
        if not picked[name]:
            raise ValueError(f"{csv}: none of its scenes is in {root}")
    t0 = time.perf_counter()
    seed_everything(params.seed)  # the pyramid's and the head's initial weights
    body, weights = create_body(p.body, p.pretrained)
    model = FaceFCOS(body, p)
    views = scene_views(model, _pictures(picked["train"]), p, params.seed)
    t_views = time.perf_counter() - t0
    print(f"{len(views)} views of {len(picked['train'])} training scenes in {t_views:.0f} s")
    live = open_live(live_dir)
    history = train_fcos(model, views, p, params.seed, on_epoch=epoch_logger(live, LOSSES))
    t_train = time.perf_counter() - t0 - t_views
    del views
    meta = {"body": p.body, "weights": weights, "params": p.model_dump(), "threshold": 0.0}
    valid = _pictures(picked["valid"])
    detector = TrainedFaceDetector.from_model(model, meta)
    t1 = time.perf_counter()
    found = detect_scenes(detector, (rgb for rgb, _ in valid))
    ms = 1000 * (time.perf_counter() - t1) / len(valid)
    table = threshold_sweep(found, [t for _, t in valid], p.operating_points)
    best = max(table, key=lambda row: row["f1"])
    out.parent.mkdir(parents=True, exist_ok=True)
    save_fcos(model, out, {**meta, "threshold": best["threshold"]})
    results = [
        SceneResult(s.image.stem, t, [b.name for b in s.boxes], boxes, scores,
                    np.ones((len(scores), 1)), ["face"] * len(scores))
        for s, (_, t), (boxes, scores) in zip(picked["valid"], valid, found, strict=True)
    ]  # fmt: skip
    names = {b.name for s in picked["valid"] for b in s.boxes}
    ap = map50(results, dict.fromkeys(names, "face"), ["face"])["mean"]
    metrics = {
        "body": p.body,
        "weights": weights,
        "train": {
            "scenes": len(picked["train"]),
            "views": len(picked["train"]) * p.views,
            "faces": sum(len(s.boxes) for s in picked["train"]),
            "views_seconds": round(t_views, 1),
            "train_seconds": round(t_train, 1),
            "threads": threads,
            "final_loss": history[-1],
        },
        "valid": {
            "scenes": len(valid),
            "faces": sum(len(t) for _, t in valid),
            "face_ap50": ap,
            "ms_per_scene": round(ms, 1),
        },
        "chosen": best,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "unreadable": bad,
    }
    finish(live, metrics)
    sweep_csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table).to_csv(sweep_csv, index=False)
    print(
        f"detector: valid face AP@0.5 {ap}, threshold {best['threshold']}: recall"
        f" {best['recall']}, precision {best['precision']}; {ms:.0f} ms a scene"
    )
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenes", type=Path, help="the training source's scene folder")
    parser.add_argument("--train", type=Path, default=Path("data/splits/train.csv"))
    parser.add_argument("--valid", type=Path, default=Path("data/splits/valid.csv"))
    parser.add_argument("--out", type=Path, default=Path("models/detector.safetensors"))
    parser.add_argument("--live", type=Path, default=Path("metrics/detect/detector"),
                        help="DVCLive folder: metrics.json, plots/")  # fmt: skip
    parser.add_argument("--sweep", type=Path, default=Path("metrics/detect/detector_sweep.csv"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    args = parser.parse_args()
    with exit_on_error("train_detector"):
        params = load_stage_params(args.params, SECTIONS, args.task)
        fcos = load_stage_params(args.params, ["fcos"], args.task).fcos
        main(params, fcos, args.scenes, args.train, args.valid, args.out, args.live, args.sweep)
