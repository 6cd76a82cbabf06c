"""Stage candidates (detect/dvc.yaml): the face detector at a low threshold on the scenes of
the training and validation splits, every box cut and classified as predict does; each box's
pooled classifier features, scores and the scenes' labelled faces go to one .npz, the
no-face re-scorer's training rows (boxes on no labelled face are its hard negatives).

Without --model the boxes go unclassified: all the box refiner reads (three_class/dvc.yaml),
so that stage does not rerun each time the classifier retrains."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from facemask.config import exit_on_error, tune_malloc
from facemask.data.scenes import list_scenes, read_scene_ids
from facemask.detection.factory import create_detector
from facemask.detection.mining import detector_boxes, save_results
from facemask.params import DetectParams, Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores
from facemask.serving.engines import load_engine
from facemask.serving.scenes import run_scenes

SECTIONS = ("prepare", "evaluate", "scenes")


def main(
    params: Mapping | Params | None,
    detect: DetectParams,
    model_path: Path | None,
    root: Path,
    splits: Mapping[str, Path],
    out: Path,
) -> dict:
    """Mine the boxes of the scenes each split CSV lists (`splits`: name -> CSV); with no
    `model_path` (and no `params`: they say how to crop and classify), the detector's boxes
    alone."""
    tune_malloc()
    use_free_cores()
    engine = None
    if model_path is not None:
        if params is None:
            raise ValueError(f"{model_path}: classifying the boxes needs the params")
        params = stage_params(params, SECTIONS)
        engine = load_engine(model_path, "torch", batch_size=params.scenes.batch_size)
    detector = create_detector(
        detect.detector, threshold=detect.threshold, upscale=detect.upscale, threads=1
    )
    listed, bad = list_scenes(root, None, "auto")
    results, names, counts = [], [], {}
    for split, csv in splits.items():
        ids = read_scene_ids(csv)
        picked = [s for s in listed if s.image.stem in ids]
        if not picked:
            raise ValueError(f"{csv}: none of its scenes is in {root}")
        if engine is None:
            found = detector_boxes(picked, detector, bad)
        else:
            assert isinstance(params, Params)  # read above, with the engine
            found = run_scenes(
                picked,
                engine,
                detector,
                params.prepare.crop_margin,
                params.scenes.batch_size,
                params.evaluate.abstain,
                bad,
                keep_features=True,
            )
        results += found
        names += [split] * len(found)
        counts[split] = {"scenes": len(found), "boxes": sum(len(r.boxes) for r in found)}
    save_results(out, results, names)
    for split, c in counts.items():
        print(f"{split}: {c['scenes']} scenes, {c['boxes']} detector boxes")
    if bad:
        print(f"{len(bad)} unreadable: " + "; ".join(bad[:3]))
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="the classifier (omit: boxes only)")
    parser.add_argument("scenes", type=Path, help="the training source's scene folder")
    parser.add_argument(
        "--split",
        nargs=2,
        action="append",
        metavar=("NAME", "CSV"),
        required=True,
        help="a split and its CSV (a `scene` column): train data/splits/train.csv",
    )
    parser.add_argument("--out", type=Path, default=Path("data/detect/candidates.npz"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    args = parser.parse_args()
    with exit_on_error("candidates"):
        main(
            load_stage_params(args.params, SECTIONS, args.task) if args.model else None,
            load_stage_params(args.params, ["detect"], args.task).detect,
            args.model,
            args.scenes,
            {name: Path(csv) for name, csv in args.split},
            args.out,
        )
