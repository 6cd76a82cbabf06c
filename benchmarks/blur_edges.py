"""Where the blur slice's edges come from: the variance of the Laplacian that is left of a
face of S px, measured as the slices stage measures (picture squashed to MEASURE_SIZE).

Each test photo of the default data at least 256 px on its short side is shrunk to a short
side of S px (bilinear, as browsers do), squashed to MEASURE_SIZE x MEASURE_SIZE, and
measured; the median over the photos per S is printed.

    python benchmarks/blur_edges.py [data/splits/test.csv] [--photos 40]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from facemask.evaluation.slices import BLUR, MEASURE_SIZE, image_measures

SIDES = [None, 128, 96, 64, 48, 32, 16]  # None: the photo as it is


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test", type=Path, nargs="?", default=Path("data/splits/test.csv"))
    parser.add_argument("--photos", type=int, default=40)
    args = parser.parse_args()
    paths = [p for p in pd.read_csv(args.test)["path"] if min(Image.open(p).size) >= 256]
    paths = paths[: args.photos]
    rows = []
    for side in SIDES:
        values = []
        for path in paths:
            im = Image.open(path).convert("RGB")
            if side:
                scale = side / min(im.size)
                small = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                im = im.resize(small, Image.BILINEAR)
            im = im.resize((MEASURE_SIZE, MEASURE_SIZE), Image.BILINEAR)
            values.append(image_measures(np.asarray(im)[None])["blur"].iloc[0])
        rows.append({"face side (px)": side or "original", "median blur": np.median(values)})
    print(f"{len(paths)} photos, measured at {MEASURE_SIZE} px; edges in use: {BLUR[:-1]}")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"))


if __name__ == "__main__":
    main()
