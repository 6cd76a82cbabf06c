"""Stage prepare: index every decodable image, reject the rest with reasons, group duplicates."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from facemask.config import exit_on_error
from facemask.data.prepare import build_index_with, sources_from_specs
from facemask.params import Params, load_stage_params, stage_params

SECTIONS = ("classes", "data", "prepare")


def main(
    params: Mapping | Params,
    raw: Path,
    index_csv: Path,
    rejected_csv: Path,
    report_json: Path,
    crops: Path,
) -> dict:
    """Write the index, the rejected list and the prepare report (and face crops).

    `crops` is emptied first: no default, so a caller can't wipe the workspace's
    data/crops by running from the repository root."""
    params = stage_params(params, SECTIONS)
    sources = sources_from_specs([s.spec() for s in params.data.sources], raw, params.classes)
    p = params.prepare
    shutil.rmtree(crops, ignore_errors=True)  # crops of an earlier run must not linger
    crops.mkdir(parents=True)
    index, rejected, report = build_index_with(sources, crops, p, p.group_by)
    for path in (index_csv, rejected_csv, report_json):
        path.parent.mkdir(parents=True, exist_ok=True)
    index.to_csv(index_csv, index=False, lineterminator="\n")
    rejected.to_csv(rejected_csv, index=False, lineterminator="\n")
    report_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2, sort_keys=True))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", type=Path, help="folder of extracted sources (data/raw)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--index", type=Path, default=Path("data/index.csv"))
    parser.add_argument("--rejected", type=Path, default=Path("data/rejected.csv"))
    parser.add_argument("--report", type=Path, default=Path("metrics/prepare.json"))
    parser.add_argument("--crops", type=Path, default=Path("data/crops"))
    args = parser.parse_args()
    with exit_on_error("prepare"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.raw,
            args.index,
            args.rejected,
            args.report,
            args.crops,
        )
