"""Boxes where annotators draw them (issue 48.3): does a side-offset mapping, fitted on the
default finder's boxes in the andrewmvd training scenes, move its boxes onto the annotators'
on the valid scenes and on the external dataroots scenes? Kept only where it gains on both.

Detection only, no classifier: the finder file (models/finder.json) on every scene;
facemask.detection.refine fits [1, log side, score] -> side offsets on the boxes matched to a
labelled face at IoU >= --iou, and scores boxes before and after (mean IoU of the matched
boxes, the share of faces matched at IoU 0.5, face AP@0.5). Writes
benchmarks/results/box_mapping.md.

    python benchmarks/box_mapping.py
    python benchmarks/box_mapping.py --smoke    # synthetic boxes with a planted offset
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.data.scenes import list_scenes, read_scene_ids
from facemask.detection.factory import create_finder, read_finder
from facemask.detection.mining import detector_boxes
from facemask.detection.refine import (
    SIDES,
    box_scores,
    fit_box_refiner,
    matched_pairs,
    refine_results,
)
from facemask.detection.scoring import SceneResult

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "box_mapping.md"


def mine(finder: Path, root: Path, fmt: str, splits: dict[str, Path | None]) -> dict:
    """The finder's boxes on the scenes of each split (None: every scene under `root`)."""
    detector = create_finder(finder, threads=1)
    listed, bad = list_scenes(root, None, fmt)
    out = {}
    for name, csv in splits.items():
        ids = None if csv is None else read_scene_ids(csv)
        picked = [s for s in listed if ids is None or s.image.stem in ids]
        out[name] = detector_boxes(picked, detector, bad)
        print(f"{name}: {len(picked)} scenes, {sum(len(r.boxes) for r in out[name])} boxes")
    getattr(detector, "close", lambda: None)()
    return out


def compare(train: list[SceneResult], sets: dict[str, list[SceneResult]], iou: float):
    """Fit on `train`; each set's box scores before and after; gains on every set or not."""
    refiner = fit_box_refiner(train, iou)
    rows = []
    for name, results in sets.items():
        before, after = box_scores(results, iou), box_scores(refine_results(results, refiner), iou)
        rows += [
            {"set": name, "boxes": "as found", **before},
            {"set": name, "boxes": "mapped", **after},
        ]
    frame = pd.DataFrame(rows)
    gains = all(
        frame[(frame.set == s) & (frame.boxes == "mapped")][k].item()
        > frame[(frame.set == s) & (frame.boxes == "as found")][k].item()
        for s in sets
        for k in ("faces_at_iou_0.5", "face_ap50")
    )
    return refiner, frame, gains


def planted(n: int = 300, shift: float = 0.4, seed: int = 0) -> list[SceneResult]:
    """One face a scene, found `shift` of its height too high, with a little noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x, y, s = *rng.uniform(0, 400, 2), rng.uniform(12, 120)
        truth = np.array([[x, y, x + s, y + s]])
        found = truth + s * (np.array([0, -shift, 0, -shift]) + rng.normal(0, 0.01, 4))
        out.append(SceneResult(f"s{i}", truth, ["face"], found, np.array([0.9]),
                               np.zeros((1, 0)), ["face"]))  # fmt: skip
    return out


def commit() -> str:
    run = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)  # noqa: E731
    head = run("rev-parse", "--short", "HEAD").stdout.strip()
    return head + (" plus the working tree" if run("status", "--porcelain").stdout else "")


def report(refiner, train: list[SceneResult], iou: float, frame, gains: bool, what: str) -> str:
    boxes, scores, _, _ = matched_pairs(train, iou)
    mean = refiner.offsets(boxes, scores).mean(0)  # what the terms add up to, on average
    moved = ", ".join(f"{s} {m:+.3f}" for s, m in zip(SIDES, mean, strict=True))
    verdict = "gains on every set" if gains else "does not gain on every set: not kept"
    return (
        f"# Box mapping: the finder's boxes onto the annotators'\n\n{what}\n\n"
        f"{frame.to_markdown(index=False)}\n\nFitted on {refiner.pairs} matched boxes; the mean"
        f" move of each side, in box widths / heights: {moved}. The mapping {verdict}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finder", type=Path, default=ROOT / "models" / "finder.json")
    parser.add_argument("--scenes", type=Path, default=ROOT / "data" / "raw" / "andrewmvd")
    parser.add_argument("--train", type=Path, default=ROOT / "data" / "splits" / "train.csv")
    parser.add_argument("--valid", type=Path, default=ROOT / "data" / "splits" / "valid.csv")
    parser.add_argument("--external", type=Path, default=ROOT / "data/scenes/dataroots")
    parser.add_argument("--iou", type=float, default=0.3, help="a box on a face from this IoU")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--smoke", action="store_true", help="synthetic boxes, planted offset")
    args = parser.parse_args()
    if args.smoke:
        results = planted()
        train = results[:200]
        refiner, frame, gains = compare(train, {"held out": results[200:]}, args.iou)
        what = "`--smoke`: synthetic boxes found 40 % of their height too high."
    else:
        own = mine(args.finder, args.scenes, "auto", {"train": args.train, "valid": args.valid})
        external = mine(args.finder, args.external, "csv", {"dataroots": None})
        sets = {"andrewmvd valid": own["valid"], "dataroots (external)": external["dataroots"]}
        train = own["train"]
        refiner, frame, gains = compare(train, sets, args.iou)
        f = read_finder(args.finder)
        what = (
            f"`python benchmarks/box_mapping.py` at {commit()}: the finder file {args.finder.name}"
            f" ({f.detector} at {f.threshold}, scales {f.scales or [f.upscale]}), fitted on the"
            f" andrewmvd training scenes at IoU >= {args.iou}; detection only, one class: face."
        )
    text = report(refiner, train, args.iou, frame, gains, what)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
