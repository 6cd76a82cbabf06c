"""The crop check of `facemask predict --crops` (params crop_check): how many real face crops
of a split it calls no face, and how many non-face pictures it lets through.

Non-face pictures are made here: 40 of flat colour, uniform noise, 16-bit grey noise and
Gaussian noise, 40-400 px. Writes benchmarks/results/crop_check.md.

    python benchmarks/crop_check.py --split data/splits/valid.csv data/splits/test.csv
    python benchmarks/crop_check.py --smoke                          # non-face pictures only
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from facemask.detection.crop_check import CropCheck
from facemask.detection.factory import create_detector
from facemask.params import load_stage_params

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "crop_check.md"


def non_faces(n: int = 40, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = int(rng.integers(40, 400))
        if i % 4 == 0:
            x = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
        elif i % 4 == 1:
            x = np.full((s, s, 3), rng.integers(0, 256, 3), np.uint8)
        elif i % 4 == 2:
            grey = ((rng.random((s, s)) * 65535).astype(np.uint16) >> 8).astype(np.uint8)
            x = np.stack([grey] * 3, -1)
        else:
            x = rng.normal(128, 40, (s, s, 3)).clip(0, 255).astype(np.uint8)
        out.append(x)
    return out


def measure(check: CropCheck, split: Path | None) -> dict:
    fakes = non_faces()
    row = {"non-face pictures let through": f"{sum(map(check.holds_face, fakes))} / {len(fakes)}"}
    if split is not None:
        table = pd.read_csv(split)
        missed = [
            p for p in table.path if not check.holds_face(np.asarray(Image.open(p).convert("RGB")))
        ]
        row["real crops called no face"] = f"{len(missed)} / {len(table)} ({split})"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, nargs="*", default=[], help="split CSVs of crops")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--smoke", action="store_true", help="non-face pictures only, no file")
    args = parser.parse_args()
    cc = load_stage_params(ROOT / "params.yaml", ["crop_check"]).crop_check
    detector = create_detector(cc.detector, threshold=cc.threshold, upscale=1.0)
    settings = {"settings": f"{cc.detector} {cc.threshold}, {cc.side} px, margin {cc.pad}"}
    check = CropCheck(detector, cc.side, cc.pad)
    splits = [] if args.smoke else args.split
    rows = [settings | measure(check, split) for split in splits or [None]]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    text = f"`python benchmarks/crop_check.py`, commit {commit}\n\n" + pd.DataFrame(
        rows
    ).to_markdown(index=False)
    print(text)
    if not args.smoke:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
