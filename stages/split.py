"""Stage split: stratified, duplicate-group-aware train/valid/test CSVs, plus a leakage check."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from facemask.config import load_params
from facemask.split import SPLITS, cross_split_leaks, split_index


def main(params: dict, index_csv: Path, out: Path, report_json: Path) -> dict:
    """Write out/{train,valid,test}.csv and a report with counts and leak checks."""
    s = params["split"]
    index = pd.read_csv(index_csv)
    assignment = split_index(index, s["valid"], s["test"], params["seed"])
    out.mkdir(parents=True, exist_ok=True)
    parts = {name: index[assignment == name] for name in SPLITS}
    dropped = {}
    if s["unique_eval"]:
        # Copies of one picture are one test case: six resized copies of a mislabelled
        # photo would otherwise count as six errors. Training keeps every copy.
        for name in ("valid", "test"):
            unique = parts[name].drop_duplicates("copies")
            dropped[name] = len(parts[name]) - len(unique)
            parts[name] = unique
    for name, part in parts.items():
        part.to_csv(out / f"{name}.csv", index=False, lineterminator="\n")
    near = params["prepare"]["near_duplicate_distance"]
    report = {
        name: {
            "n": len(part),
            "fraction": round(len(part) / max(len(index), 1), 4),
            "per_class": part["label"].value_counts().sort_index().to_dict(),
        }
        for name, part in parts.items()
    }
    report["leaks"] = cross_split_leaks(parts, near)
    report["duplicates_dropped_from_eval"] = dropped
    report_json.parent.mkdir(parents=True, exist_ok=True)
    report_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2, sort_keys=True))
    if any(report["leaks"].values()):
        raise RuntimeError(f"duplicates span splits: {report['leaks']}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("index", type=Path)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/splits"))
    parser.add_argument("--report", type=Path, default=Path("metrics/split.json"))
    args = parser.parse_args()
    main(load_params(args.params), args.index, args.out, args.report)
