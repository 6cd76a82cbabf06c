"""Stage finder (dvc.yaml) and fused_finder (detect/dvc.yaml): the face finder's operating
point as a finder file, which `facemask predict`, `evaluate-scenes` and `facemask.load` read
beside the model. From params `finder` (the finder chosen on the andrewmvd valid scenes), or,
with --fusion, from stage fusion's choice on the valid scenes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facemask.config import exit_on_error
from facemask.detection.factory import CropCheckSettings, Finder, name_from, write_finder
from facemask.params import Params, load_stage_params


def main(params: Params, out: Path, fusion_json: Path | None = None) -> Finder:
    """Write `out`: the finder params' detector, or stage fusion's chosen setting (its members
    from params fusion.member_floor, YuNet at scenes.upscale). Files are named from `out`'s
    folder, so the folder can move with them."""
    if fusion_json is None:
        fp = params.finder
        finder = Finder(
            detector=name_from(fp.detector, out.parent), threshold=fp.threshold,
            upscale=None if fp.scales else fp.upscale, scales=fp.scales, tile=fp.tile,
            chosen_by="params finder (benchmarks/finders.py, andrewmvd valid scenes); crop_check",
            crop_check=None  # a params file from before the crop check: none
            if params.crop_check is None
            else CropCheckSettings(**params.crop_check.model_dump()),
        )  # fmt: skip
    else:
        sp = params.scenes
        fusion = json.loads(fusion_json.read_text())
        chosen = fusion["chosen"]
        finder = Finder(
            detector=name_from(fusion["detector"], out.parent), threshold=chosen["threshold"],
            upscale=sp.upscale, scales=chosen["scales"], iou=chosen["iou"],
            member_floor=params.fusion.member_floor,
            chosen_by=f"stage fusion on {fusion['scenes']} valid scenes ({fusion_json})",
        )  # fmt: skip
    write_finder(out, finder)
    print(f"{out}: {finder.detector} at threshold {finder.threshold}")
    return finder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models/finder.json"))
    parser.add_argument("--fusion", type=Path, help="stage fusion's metrics (its choice)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    args = parser.parse_args()
    with exit_on_error("finder"):
        sections = ["scenes", "fusion"] if args.fusion else ["finder", "crop_check"]
        main(load_stage_params(args.params, sections, args.task), args.out, args.fusion)
