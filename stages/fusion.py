"""Stage fusion (detect/dvc.yaml): YuNet and the trained detector fused (weighted box fusion)
on the validation split's scenes, at every set of enlargements for the trained detector,
fusion IoU and fused-box threshold of params `fusion`: face recall, precision, F1 and false
boxes per scene. The chosen pair finds the
most faces with no more false boxes a scene than the reference (YuNet at params scenes'
threshold and upscale) on the same scenes; stage fused_finder writes it as a finder file."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from facemask.config import exit_on_error, tune_malloc
from facemask.data.images import open_image
from facemask.data.scenes import list_scenes, read_scene_ids
from facemask.detection.factory import create_detector
from facemask.detection.finders import TunedDetector
from facemask.detection.fusion import FusedDetector, fusion_sweep
from facemask.detection.operating import detect_scenes, most_found_within, threshold_sweep
from facemask.params import FusionParams, ScenesParams, load_stage_params
from facemask.runtime import use_free_cores


def main(
    detector: str, root: Path, valid_csv: Path, metrics_json: Path, sweep_csv: Path,
    p: FusionParams, sp: ScenesParams, curve_csv: Path | None = None,
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
    pictures = [np.asarray(open_image(s.image)[0]) for s in scenes]
    truths = [np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in s.boxes]).reshape(-1, 4)
              for s in scenes]  # fmt: skip
    shapes = [rgb.shape for rgb in pictures]
    table, ms = [], {}
    for scales in p.scales:  # the trained member's enlargements
        # Only its members run here: the sweep fuses their boxes at every IoU and threshold.
        fused = create_detector(
            detector, threads=1, scales=scales, upscale=sp.upscale,
            member_floor=p.member_floor, iou=p.ious[0], threshold=0.0,
        )  # fmt: skip
        assert isinstance(fused, FusedDetector)  # the name joins detectors with +
        t0 = time.perf_counter()
        members = [[m.detect(rgb) for m in fused.members] for rgb in pictures]  # each run once
        ms[str(scales)] = round(1000 * (time.perf_counter() - t0) / len(scenes), 1)
        fused.close()
        rows = fusion_sweep(members, shapes, truths, p.ious, p.thresholds)
        table += [{"scales": " ".join(f"{x:g}" for x in scales), **r} for r in rows]

    reference = cast(
        TunedDetector,
        create_detector(p.reference, threshold=sp.threshold, upscale=sp.upscale, threads=1),
    )
    ref = threshold_sweep(detect_scenes(reference, pictures), truths, [reference.threshold])[0]
    reference.close()
    chosen = most_found_within(table, ref["false_boxes_per_scene"])
    if chosen is None:
        raise ValueError(
            f"{valid_csv}: no fusion setting has as few false boxes a scene as {p.reference}"
            f" ({ref['false_boxes_per_scene']}); add higher thresholds to params fusion"
        )
    as_list = lambda row: {**row, "scales": [float(x) for x in row["scales"].split()]}  # noqa: E731
    chosen = as_list(chosen)
    metrics = {
        "detector": detector,
        "scenes": len(scenes),
        "faces": sum(len(t) for t in truths),
        "reference": {"detector": p.reference, **ref},
        "chosen": chosen,
        "best_f1": as_list(max(table, key=lambda row: row["f1"])),
        "ms_per_scene": ms,  # the members' detection alone, per set of scales
    }
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    sweep_csv.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(table)
    frame.to_csv(sweep_csv, index=False)
    if curve_csv is not None:  # one precision-recall curve: the chosen scales and IoU
        pick = (frame["scales"] == " ".join(f"{x:g}" for x in chosen["scales"])) & (
            frame["iou"] == chosen["iou"]
        )
        curve_csv.parent.mkdir(parents=True, exist_ok=True)
        frame[pick].to_csv(curve_csv, index=False)
    print(
        f"fused on {len(scenes)} valid scenes: scales {chosen['scales']}, IoU {chosen['iou']},"
        f" threshold {chosen['threshold']}: recall {chosen['recall']},"
        f" {chosen['false_boxes_per_scene']} false boxes a scene"
        f" ({p.reference}: {ref['recall']}, {ref['false_boxes_per_scene']});"
        f" {ms[str(chosen['scales'])]:.0f} ms a scene"
    )
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("detector", help="two detectors joined by +")
    parser.add_argument("scenes", type=Path, help="the training source's scene folder")
    parser.add_argument("--valid", type=Path, default=Path("data/splits/valid.csv"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/detect/fusion.json"))
    parser.add_argument("--sweep", type=Path, default=Path("metrics/detect/fusion_sweep.csv"))
    parser.add_argument("--curve", type=Path, help="the chosen scales' and IoU's rows (a plot)")
    args = parser.parse_args()
    with exit_on_error("fusion"):
        params = load_stage_params(args.params, ["fusion", "scenes"], args.task)
        main(args.detector, args.scenes, args.valid, args.metrics, args.sweep, params.fusion,
             params.scenes, args.curve)  # fmt: skip
