"""Stage external_data: fetch, unpack and index each external test set (evaluate.external).

Each set is prepared like training data (decoded, checked, face crops cut from boxes,
copies grouped), one index per set; names that map to no class are left out and counted.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from facemask.config import cache_dir, exit_on_error
from facemask.data.download import DownloadError, fetch_source
from facemask.data.external import count_files, left_out_counts
from facemask.data.prepare import build_index_with, sources_from_specs
from facemask.params import Params, load_stage_params, stage_params

SECTIONS = ("classes", "download", "evaluate", "prepare")


def main(params: Mapping | Params, out: Path, report_json: Path) -> dict:
    """Write out/<name>.csv (index), out/raw/<name>/ and out/crops/<name>/ for every set."""
    params = stage_params(params, SECTIONS)
    specs, p = params.evaluate.external, params.prepare
    # Check every spec before fetching anything: a typo fails in a second, not a minute.
    sources = sources_from_specs(
        [s.spec() for s in specs], out / "raw", params.classes, "evaluate.external"
    )
    shutil.rmtree(out, ignore_errors=True)  # sets dropped from params must not linger
    out.mkdir(parents=True)  # DVC wants the output even when no set is configured
    report = {}
    for spec, src in zip(specs, sources, strict=True):
        try:
            fetched = fetch_source(spec, src.root, cache_dir() / "downloads", params.download)
        except (DownloadError, OSError) as err:
            raise ValueError(f"evaluate.external[{src.name}]: {err}") from err
        index, rejected, rep = build_index_with([src], out / "crops" / src.name, p)
        index.to_csv(out / f"{src.name}.csv", index=False, lineterminator="\n")
        left_out = left_out_counts(rejected)
        for folder in rep["unmapped_folders"].get(src.name, []):
            left_out[folder] = count_files(src.root / folder)
        report[src.name] = {
            "archive": fetched,
            "images_indexed": rep["images_indexed"],
            "per_class": rep["per_class"],
            "left_out": left_out,
            "rejected_by_reason": rep["rejected_by_reason"],
        }
    report_json.parent.mkdir(parents=True, exist_ok=True)
    report_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--out", type=Path, default=Path("data/external"))
    parser.add_argument("--report", type=Path, default=Path("metrics/external_data.json"))
    args = parser.parse_args()
    with exit_on_error("external_data"):
        main(load_stage_params(args.params, SECTIONS, args.task), args.out, args.report)
