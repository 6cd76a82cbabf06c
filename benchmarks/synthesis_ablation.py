"""What synthesis buys and costs, in one run: the same task trained on different training sets,
every variant tested on the same real pictures.

    python benchmarks/synthesis_ablation.py three-class    # after dvc repro three_class/dvc.yaml
    python benchmarks/synthesis_ablation.py binary         # after dvc repro (the default)

three-class: real only / real + MaskedFace-Net / real + synthesis / real + both, each trained
with three_class/params.yaml and tested on real pictures only: the crops of the andrewmvd test
scenes (split by scene; accuracy, macro F1), the same scenes through the serving chain, and
the external mask_types set. The worn-incorrectly F1 of each, and their mean: the figure to
choose by (14 test crops alone are too few). The task draws no masks (masks_per_face: 0), so
the synthesis runs here, into the temporary folder, with --masks per bare face (default 2).

binary: the default training set without and with the occluder synthesis (params
synthesize.occluders_per_face: 1), each scored held-in (published labels), on the external
sets, the face-size slices, the corruptions and the dataroots street scenes (detector +
classifier, faces the detector found). The baseline is the pipeline's own outputs in the
workspace; only the variant trains here.

Each training runs as its own process (its time and peak memory are its own, one at a time).
Writes a markdown table (--out; default benchmarks/results/synthesis_ablation_<task>.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> tuple[float, float]:
    """Run a stage as a child process: (seconds, its peak RSS in GiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}")
    return time.perf_counter() - t0, usage.ru_maxrss / 2**20


def variant_splits(splits: Path, out: Path, drop_source: str | None) -> Path:
    """A copy of the split folder whose train.csv leaves out one source's rows."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("valid.csv", "test.csv", "test_published.csv"):
        (out / name).write_bytes((splits / name).read_bytes())
    train = pd.read_csv(splits / "train.csv")
    if drop_source:
        train = train[train["source"] != drop_source]
    train.to_csv(out / "train.csv", index=False, lineterminator="\n")
    return out


def train_and_test(params: Path, splits: Path, synth: Path | None, work: Path) -> dict:
    model = work / "model.safetensors"
    cmd = [sys.executable, "-m", "stages.train", str(splits), "--params", str(params),
           "--model-out", str(model), "--history", str(work / "history.csv"),
           "--metrics", str(work / "train.json")]  # fmt: skip
    if synth is not None:
        cmd += ["--synthetic", str(synth)]
    seconds, rss = run(cmd)
    run([sys.executable, "-m", "stages.evaluate", str(model), str(splits / "test.csv"),
         str(splits / "test_published.csv"), "--params", str(params),
         "--metrics", str(work / "test.json"), "--predictions", str(work / "pred.csv"),
         "--curves", str(work / "curves")])  # fmt: skip
    train = json.loads((work / "train.json").read_text())
    return {"test": json.loads((work / "test.json").read_text()), "train": train,
            "seconds": seconds, "rss": rss, "model": model}  # fmt: skip


WRONG = "mask_worn_incorrectly"


def other_sets(params: Path, model: Path, splits: Path, work: Path) -> tuple[dict, dict]:
    """The variant on the external mask_types set and on the andrewmvd test scenes (the serving
    chain: detector -> crop -> classifier; faces it found)."""
    run([sys.executable, "-m", "stages.external", str(model), "data/three_class/external",
         str(splits), "--params", str(params), "--metrics", str(work / "external"),
         "--predictions", str(work / "external_predictions")])  # fmt: skip
    run([sys.executable, "-m", "stages.scenes", "--params", str(params), str(model),
         "data/three_class/raw/andrewmvd", "--scenes", "all", "--exclude",
         str(splits / "train.csv"), str(splits / "valid.csv"), "--metrics",
         str(work / "scenes.json"), "--gallery", str(work / "scenes.png")])  # fmt: skip
    ext = json.loads((work / "external" / "mask_types.json").read_text())
    return ext, json.loads((work / "scenes.json").read_text())


def scenes_f1(scenes: dict, cls: str) -> float:
    """F1 of one class on the faces the detector found (recall: `accuracy`)."""
    c = scenes["classification"]["per_class"][cls]
    p, r = c["precision"] or 0.0, c["accuracy"] or 0.0
    return 2 * p * r / (p + r) if p + r else 0.0


def pipeline_run() -> tuple[dict, dict, dict]:
    """`real + MaskedFace-Net` is the three_class pipeline's own configuration: its outputs,
    read back (fine-tune reruns of one variant can differ by float drift: docs/synthesis.md,
    three seeds)."""
    m = ROOT / "metrics" / "three_class"
    train = json.loads((m / "train.json").read_text())
    r = {"test": json.loads((m / "test.json").read_text()), "train": train,
         "seconds": train["seconds"]["total"], "rss": float("nan")}  # fmt: skip
    ext = json.loads((m / "external" / "mask_types.json").read_text())
    return r, ext, json.loads((m / "scenes.json").read_text())


def synthesize(raw: dict, train_csv: Path, work: Path) -> tuple[Path, float, dict]:
    """`raw` written to work/params.yaml and stage synthesize run with it on `train_csv` into
    work/synth: (the params file, the stage's seconds, its report)."""
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    seconds, _ = run([sys.executable, "-m", "stages.synthesize", str(train_csv),
                      "--params", str(params), "--out", str(work / "synth"),
                      "--report", str(work / "synth.json")])  # fmt: skip
    return params, seconds, json.loads((work / "synth.json").read_text())


def three_class(args: argparse.Namespace) -> str:
    raw = yaml.safe_load((ROOT / "three_class" / "params.yaml").read_text())
    raw["synthesize"]["masks_per_face"] = 2 if args.masks is None else args.masks
    splits = ROOT / "data" / "three_class" / "splits"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        params, _, synth_report = synthesize(raw, splits / "train.csv", Path(tmp))
        synth = Path(tmp) / "synth" / "index.csv"
        for name, drop, extra in [
            ("real only", "maskedfacenet", None),
            ("real + MaskedFace-Net", None, None),
            ("real + synthesis", "maskedfacenet", synth),
            ("real + both", None, synth),
        ]:
            work = Path(tmp) / name.replace(" ", "_").replace("+", "p")
            if name == "real + MaskedFace-Net" and args.reuse_pipeline:
                r, ext, scenes = pipeline_run()
            else:
                vs = variant_splits(splits, work / "splits", drop)
                r = train_and_test(params, vs, extra, work)
                # The same external pictures for every variant: copies of any training picture
                # of the full split (MaskedFace-Net included) go, whatever the variant used.
                ext, scenes = other_sets(params, r["model"], splits, work)
            t = r["test"]
            f1s = {
                "test crops": t["per_class"][WRONG]["f1"],
                "test scenes": scenes_f1(scenes, WRONG),
                "mask_types": ext["per_class"][WRONG]["f1"],
            }
            rows.append({
                "training set": name,
                "train pictures": r["train"]["train_pictures"],
                "synthetic": r["train"]["synthetic_pictures"],
                "accuracy": round(t["accuracy"], 4),
                "macro F1": round(t["macro"]["f1"], 4),
                **{f"worn wrong F1, {k}": round(v, 3) for k, v in f1s.items()},
                "worn wrong F1, mean": round(sum(f1s.values()) / len(f1s), 3),
                "mask_types macro F1": round(ext["macro"]["f1"], 4),
                "train s": round(r["seconds"]),
                "peak GiB": round(r["rss"], 2),
            })  # fmt: skip
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows).to_markdown(index=False)
    if args.reuse_pipeline:
        table += (
            "\n\n`real + MaskedFace-Net`: the three_class pipeline's own run"
            " (metrics/three_class/), read back; its train time is the stage's own, its peak"
            " memory not measured."
        )
    cost = (f"Synthesis (stage synthesize): {synth_report['pictures']} pictures from "
            f"{synth_report['faces_used']} bare faces in {synth_report['seconds']} s.")  # fmt: skip
    return f"{table}\n\n{cost}\n"


def binary(args: argparse.Namespace) -> str:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["synthesize"]["occluders_per_face"] = args.occluders
    masks = args.masks or 0
    raw["synthesize"]["masks_per_face"] = masks
    rows = [binary_row("default (no synthesis)", ROOT / "metrics", ROOT / "metrics" / "train.json",
                       None, None)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        splits = ROOT / "data" / "splits"
        params, synth_s, synth_report = synthesize(raw, splits / "train.csv", work)
        r = train_and_test(params, splits, work / "synth" / "index.csv", work)
        m = work / "metrics"
        run([sys.executable, "-m", "stages.external", str(r["model"]), "data/external",
             "data/splits", "--params", str(params), "--metrics", str(m / "external"),
             "--predictions", str(m / "external_predictions")])  # fmt: skip
        (m / "test.json").write_text(json.dumps(r["test"]))
        run([sys.executable, "-m", "stages.slices", str(work / "pred.csv"),
             str(m / "external_predictions"), "--params", str(params),
             "--table", str(m / "slices.csv"), "--summary", str(m / "slices.json"),
             "--plot", str(work / "slices.png")])  # fmt: skip
        run([sys.executable, "-m", "stages.robustness", str(r["model"]),
             "data/splits/test_published.csv", "--params", str(params),
             "--table", str(m / "robustness.csv"), "--metrics", str(m / "robustness.json"),
             "--plot", str(work / "robustness.png")])  # fmt: skip
        scenes_json = m / "scenes" / "dataroots.json"
        run([sys.executable, "-m", "stages.scenes", str(r["model"]), "data/scenes/dataroots",
             "--format", "csv", "--params", str(params), "--metrics", str(scenes_json),
             "--gallery", str(work / "g.png")])  # fmt: skip
        label = f"+ synthesis ({args.occluders} occluder, {masks} mask per bare face)"
        rows.append(binary_row(label, m, work / "train.json", r, synth_s))
    table = pd.DataFrame(rows).to_markdown(index=False)
    cost = (f"Synthesis: {synth_report['pictures']} pictures from {synth_report['faces_used']}"
            f" bare faces ({synth_report['by_kind']}).")  # fmt: skip
    return f"{table}\n\n{cost}\n"


def binary_row(name: str, m: Path, train_json: Path, r: dict | None, synth_s: float | None) -> dict:
    test = json.loads((m / "test.json").read_text())
    ext = {
        p.stem: json.loads(p.read_text())["accuracy"]
        for p in sorted((m / "external").glob("*.json"))
    }
    slices = json.loads((m / "slices.json").read_text())
    rob = json.loads((m / "robustness.json").read_text())
    scenes = json.loads((m / "scenes" / "dataroots.json").read_text())
    train = json.loads(train_json.read_text())
    row = {
        "training set": name,
        "held-in (published)": round(test["accuracy"], 4),
        **{f"ext {k}": round(v, 4) for k, v in ext.items()},
        "dataroots: accuracy on found faces": scenes["classification"]["accuracy"],
        "dataroots: bare faces right": scenes["classification"]["per_class"]["without_mask"][
            "accuracy"
        ],
        "dataroots: found and right": scenes["found_and_right"]["iou_0.3"]["found_and_right"],
        "worst face size": slices["face_size"]["worst_accuracy"],
        "corrupted": rob["mean_corrupted_accuracy"],
        "train s": round(r["seconds"]) if r else round(train["seconds"]["total"]),
        "synth s": round(synth_s, 1) if synth_s is not None else 0,
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["three-class", "binary"])
    parser.add_argument("--occluders", type=int, default=1, help="binary: occluders per bare face")
    parser.add_argument(
        "--masks", type=int, default=None, help="masks per bare face (binary: 0, three-class: 2)"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--reuse-pipeline",
        action="store_true",
        help="three-class: `real + MaskedFace-Net` from metrics/",
    )
    args = parser.parse_args()
    text = three_class(args) if args.task == "three-class" else binary(args)
    out = args.out or ROOT / "benchmarks" / "results" / f"synthesis_ablation_{args.task}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
