"""Stage summary: the headline numbers of every evaluation in one small metrics file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facemask.results import headline


def main(root: Path, out: Path) -> dict:
    """Write metrics/summary.json from the metrics files under root/metrics."""
    summary = headline(root)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("metrics/summary.json"))
    args = parser.parse_args()
    main(Path("."), args.out)
