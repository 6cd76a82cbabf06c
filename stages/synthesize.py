"""Stage synthesize: masks drawn on the training split's bare faces the ways people wear them,
and bare faces with non-mask occluders; an index of what was made, pinned to train."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from facemask.config import exit_on_error
from facemask.params import ConfigError, Params, load_stage_params, stage_params
from facemask.synthesis.make import gallery, synthesize

SECTIONS = ("seed", "classes", "prepare", "synthesize")


def check_labels(params: Params) -> None:
    """Every label synthesis writes is one of the task's classes (the key named if not)."""
    s, classes = params.synthesize, list(params.classes)
    wanted = {f"synthesize.placements.{p}": label for p, label in s.placements.items() if label}
    wanted["synthesize.bare_label"] = s.bare_label
    wanted["synthesize.texture_label"] = s.texture_label
    if s.occluders_per_face:
        wanted["synthesize.occluder_label"] = s.occluder_label
    for key, label in wanted.items():
        if label not in classes:
            raise ConfigError(f"params: {key}: {label!r} is not one of classes {classes}")


def main(
    params: Mapping | Params,
    train_csv: Path,
    out: Path,
    report_json: Path,
    gallery_png: Path | None = None,
) -> dict:
    """Write out/images/*.png, out/index.csv (the synthetic training rows) and a report."""
    params = stage_params(params, SECTIONS)
    check_labels(params)
    t0 = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)  # pictures of an earlier spec must not linger
    train = pd.read_csv(train_csv)
    index, report = synthesize(
        train,
        params.synthesize,
        params.seed,
        params.prepare.crop_margin,
        out / "images",
        hash_size=params.prepare.hash_size,
        workers=params.prepare.workers,
    )
    index.to_csv(out / "index.csv", index=False, lineterminator="\n")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if gallery_png is not None:
        gallery(index, gallery_png, params.synthesize.gallery)
    report_json.parent.mkdir(parents=True, exist_ok=True)
    report_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2, sort_keys=True))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("train", type=Path, help="the training split (data/splits/train.csv)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--out", type=Path, default=Path("data/synth"))
    parser.add_argument("--report", type=Path, default=Path("metrics/synthesize.json"))
    parser.add_argument("--gallery", type=Path, default=None)
    args = parser.parse_args()
    with exit_on_error("synthesize"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.train,
            args.out,
            args.report,
            args.gallery,
        )
