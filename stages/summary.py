"""Stage summary: the headline numbers of every evaluation in one small metrics file, with
the face finder that goes with the model (so `dvc exp show` says which chain each run ships,
and `dvc repro` builds it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facemask.config import exit_on_error
from facemask.results import headline


def main(root: Path, out: Path, finder: Path | None = None) -> dict:
    """Write metrics/summary.json from the metrics files under root/metrics (and `finder`:
    its detector and operating point as one string)."""
    summary = headline(root)
    if finder is not None:  # read as JSON: the detection package is not needed to name it
        try:
            f = json.loads(finder.read_text())
            keys = ("threshold", "upscale", "scales", "tile")
            shown = [f["detector"], *(f"{k} {f[k]}" for k in keys if f.get(k))]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{finder}: not a finder file ({err})") from None
        summary["finder"] = " ".join(map(str, shown))
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("metrics/summary.json"))
    parser.add_argument("--finder", type=Path, help="the finder file beside the model")
    args = parser.parse_args()
    with exit_on_error("summary"):
        main(Path("."), args.out, args.finder)
