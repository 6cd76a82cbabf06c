"""Stage scenes: the whole serving chain (face detector -> training-style crop -> classifier)
on annotated crowd photos, end to end: detection recall per class and face size, mask
accuracy on the faces found, mAP@0.5 per class; a gallery of a few annotated scenes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from facemask.config import exit_on_error, tune_malloc
from facemask.data.scenes import select_scenes
from facemask.detection.noface import NoFaceScorer
from facemask.detection.scoring import summary_line
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores
from facemask.serving.engines import load_engine
from facemask.serving.scenes import chain_detector, evaluate_scenes, scene_gallery, write_curves

SECTIONS = ("seed", "prepare", "evaluate", "scenes")


def main(
    params: Mapping | Params,
    model_path: Path,
    voc_root: Path,
    scenes: str,
    metrics_json: Path,
    gallery: Path,
    exclude: Sequence[Path] = (),
    fmt: str = "auto",
    curves_dir: Path | None = None,
    noface: Path | None = None,
    detector_name: str | None = None,
    finder: Path | None = None,
) -> dict:
    """Evaluate on the scenes of `voc_root` (`all`, or those listed in a CSV's `scene` column),
    leaving out any scene listed in the `exclude` CSVs (the splits that train). `fmt`: the
    scene layout (voc, yolo, coco, csv; auto = detected from the folder). `curves_dir`: one
    precision-recall CSV per class (a DVC plot). `noface`: a no-face re-scorer (stage noface);
    the detector then runs at the settings it was trained with and it drops what it calls
    no face. `finder`: a finder file (stage fused_finder): its detector at its operating point.
    `detector_name`: instead of the scenes params' one (or the finder's, at its settings), a
    trained detector's file (stage train_detector, at its own defaults) or a fused name."""
    params = stage_params(params, SECTIONS)
    if (detector_name is not None or finder is not None) and noface is not None:
        raise ValueError("--no-face was fitted on YuNet's boxes: not with --detector or --finder")
    tune_malloc()
    use_free_cores()
    sp = params.scenes
    engine = load_engine(model_path, "torch", batch_size=sp.batch_size)
    listed, bad = select_scenes(voc_root, scenes, exclude, fmt, sp.sample, params.seed)
    rescorer = None if noface is None else NoFaceScorer.for_model(noface, model_path)
    detector, settings = chain_detector(sp, rescorer, noface, detector_name, finder)
    curves: dict = {}
    results, metrics = evaluate_scenes(
        listed, engine, detector, sp.classes, params.prepare.crop_margin, sp.batch_size,
        params.evaluate.abstain, sp.iou, sp.min_face, sp.size_bins, bad, curves, rescorer,
    )  # fmt: skip
    metrics = {"model": metrics.pop("model"), "detector": settings, **metrics}
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    if curves_dir is not None:
        write_curves(curves, curves_dir)
    gallery.parent.mkdir(parents=True, exist_ok=True)
    scene_gallery(results, listed, engine.card.classes, sp.gallery).save(gallery)
    print(summary_line(metrics))
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument(
        "voc", type=Path, help="scene folder: VOC, YOLO, COCO json or a box CSV (see --format)"
    )
    parser.add_argument(
        "--format",
        default="auto",
        choices=("auto", "voc", "yolo", "coco", "csv"),
        help="scene layout (facemask.data.scenes); auto: detected from the folder",
    )
    parser.add_argument(
        "--scenes",
        default="all",
        help="'all', or a CSV whose `scene` column lists the scenes (a split CSV: the test"
        " split's scenes when the set trains)",
    )
    parser.add_argument(
        "--exclude",
        type=Path,
        nargs="*",
        default=[],
        help="CSVs whose `scene` column lists scenes never to use (train and valid splits)",
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/scenes.json"))
    parser.add_argument("--gallery", type=Path, default=Path("plots/scenes.png"))
    parser.add_argument("--curves", type=Path, help="folder for per-class precision-recall CSVs")
    parser.add_argument("--no-face", type=Path, help="a no-face re-scorer (detect/dvc.yaml)")
    parser.add_argument(
        "--detector",
        help="a trained detector file (stage train_detector, at its own settings); with --finder,"
        " a variant of the finder file's detector at its settings (a refined fused pair)",
    )
    parser.add_argument("--finder", type=Path, help="a finder file: the detector's operating point")
    args = parser.parse_args()
    with exit_on_error("scenes"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.model,
            args.voc,
            args.scenes,
            args.metrics,
            args.gallery,
            args.exclude,
            args.format,
            args.curves,
            args.no_face,
            args.detector,
            args.finder,
        )
