"""How often does a perceptual-hash match join two *different* pictures?

Pairs whose hashes lie within a distance are checked by an independent pixel test
(64 px greyscale: Pearson correlation > 0.95 and mean absolute difference < 12/255),
which resized or recompressed copies pass and different photos fail. Run on the
default data (data/index.csv from `dvc repro`) and on tight face crops cut from the
andrewmvd boxes, where cheap 8x8 hashes are said to match different people.

    python benchmarks/near_duplicates.py [--crops]   # prints a markdown table
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from facemask.data.dedup import near_pairs
from facemask.data.download import extract, find_in_mirrors, mirror_folders
from facemask.data.images import open_image
from facemask.data.voc import cut_crops

THREE_CLASS = {"with_mask": "a", "without_mask": "b", "mask_weared_incorrect": "c"}


def load(paths: list[str]) -> tuple[list[Image.Image], np.ndarray]:
    imgs, grey = [], []
    for p in paths:
        img, _ = open_image(p, draft_size=128)
        imgs.append(img)
        grey.append(np.asarray(img.convert("L").resize((64, 64), Image.BILINEAR), np.float32))
    return imgs, np.stack(grey)


def same_picture(grey: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    a, b = grey[pairs[:, 0]].reshape(len(pairs), -1), grey[pairs[:, 1]].reshape(len(pairs), -1)
    za = (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-6)
    zb = (b - b.mean(1, keepdims=True)) / (b.std(1, keepdims=True) + 1e-6)
    corr = (za * zb).mean(1)
    mad = np.abs(a - b).mean(1)
    return (corr > 0.95) & (mad < 12)


def hash_bits(imgs: list[Image.Image], size: int) -> np.ndarray:
    return np.stack([np.packbits(imagehash.phash(i, hash_size=size).hash.flatten()) for i in imgs])


def table(name: str, imgs: list[Image.Image], grey: np.ndarray, sha: list[str]) -> list[dict]:
    sha = np.asarray(sha)
    rows = []
    for size, thresholds in ((8, (2, 4, 6, 8, 10)), (16, (8, 12, 16, 20, 24, 32))):
        bits = hash_bits(imgs, size)
        for t in thresholds:
            pairs = near_pairs(bits, t)
            pairs = pairs[sha[pairs[:, 0]] != sha[pairs[:, 1]]]  # exact copies are trivial
            ok = same_picture(grey, pairs) if len(pairs) else np.zeros(0, bool)
            rows.append(
                {
                    "images": name,
                    "hash": f"pHash {size}x{size} ({size * size} bit)",
                    "max distance": t,
                    "pairs": len(pairs),
                    "same picture": int(ok.sum()),
                    "false matches": int((~ok).sum()),
                    "false share": f"{(~ok).mean():.1%}" if len(pairs) else "-",
                }
            )
    return rows


def crops_of_andrewmvd(tmp: Path) -> tuple[list[str], list[str]]:
    archive = find_in_mirrors("andrewmvd-face-mask-detection.zip", mirror_folders())
    if archive is None:
        raise SystemExit("andrewmvd-face-mask-detection.zip not in FACEMASK_MIRROR folders")
    root = extract(archive, tmp / "andrewmvd")
    crops, _ = cut_crops(
        root / "annotations", root / "images", tmp / "crops", THREE_CLASS, margin=0.0, min_box=16
    )
    paths = [c.path.as_posix() for c in crops]
    return paths, [Path(p).read_bytes().hex()[:64] for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", default="data/index.csv")
    parser.add_argument("--crops", action="store_true", help="also tight andrewmvd face crops")
    args = parser.parse_args()
    index = pd.read_csv(args.index)
    imgs, grey = load(index["path"].tolist())
    rows = table("default data set", imgs, grey, index["sha256"].tolist())
    if args.crops:
        with tempfile.TemporaryDirectory() as tmp:
            paths, shas = crops_of_andrewmvd(Path(tmp))
            imgs, grey = load(paths)
            rows += table(f"andrewmvd face crops ({len(paths)})", imgs, grey, shas)
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
