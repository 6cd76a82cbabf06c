"""Candidate recipes side by side, judged by what generalises: held-in test (published
labels), every external set, the worst face-size slice, mean corruption accuracy, train time
and peak RSS, all measured in one run.

Each candidate is params.yaml with a few keys overridden; its train -> evaluate -> external ->
slices -> robustness stages run in a scratch folder of their own (one process each, so peak
RSS is per candidate) on the data the main pipeline already prepared (`dvc repro external`
first). Candidates that change `data.sources` also rerun download -> prepare -> split there.

    python benchmarks/generalisation.py                    # the candidates below
    python benchmarks/generalisation.py --only baseline,degraded-1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

ANDREWMVD = {  # the crowd-photo crops as a training source (scene-grouped splits)
    "name": "andrewmvd",
    "url": "https://www.kaggle.com/api/v1/datasets/download/andrewmvd/face-mask-detection",
    "file": "andrewmvd-face-mask-detection.zip",
    "sha256": None,
    "subdir": None,
    "format": "voc",
    "classes": {"with_mask": "with_mask", "without_mask": "without_mask"},
}

CANDIDATES: dict[str, dict] = {
    "baseline": {},
    "degraded-1": {"train.head.degraded_views": 1},
    "degraded-2": {"train.head.degraded_views": 2},
    "degraded-1-noflip": {"train.head.degraded_views": 1, "train.head.flip_views": False},
    "andrewmvd+degraded-1": {"train.head.degraded_views": 1, "+source": ANDREWMVD},
    # Smaller inputs: (S/224)^2 of the backbone cost; faces under 32 px lose nothing.
    "size-160": {"train.head.degraded_views": 1, "train.image_size": 160},
    "size-128": {"train.head.degraded_views": 1, "train.image_size": 128},
    # Test-time augmentation on the 128 px default: the mirrored picture's logits averaged in.
    "size-128-tta-flip": {"train.image_size": 128, "evaluate.tta": ["flip"]},
    # Cheaper defaults: one backbone (MobileNetV2 runs ~2.8x faster than the joined pair at
    # 128 px here), smaller inputs.
    "mnv2-128": {"model": "mobilenetv2_100", "train.image_size": 128},
    "size-96": {"train.image_size": 96},
    "mnv2-96": {"model": "mobilenetv2_100", "train.image_size": 96},
    # The whole net trained after the head phase, half its pictures degraded as in train.degrade.
    "finetune-2-degrade": {"train.finetune.epochs": 2, "train.finetune.augment.degrade": 0.5},
    # The same in micro-batches of 8 (same optimiser steps: BatchNorm is frozen): less memory.
    "finetune-2-degrade-mb8": {
        "train.finetune.epochs": 2,
        "train.finetune.augment.degrade": 0.5,
        "train.finetune.micro_batch_size": 8,
    },
    # Seed spread, relative to the fine-tuned default: `seed` here moves only the training
    # randomness (head init and dropout, shuffling, augmentation); the split is the pipeline's.
    "default-seed-1": {"seed": 1},
    "frozen": {"train.finetune.epochs": 0},
    "frozen-seed-1": {"seed": 1, "train.finetune.epochs": 0},
    "default-seed-2": {"seed": 2},
    "frozen-seed-2": {"seed": 2, "train.finetune.epochs": 0},
    # Since the two-source default (code of 542386b on), the one-source recipe is this:
    # the andrewmvd crowd crops back among the external sets.
    "one-source": {"-source": "andrewmvd"},
    "one-source-frozen": {"-source": "andrewmvd", "train.finetune.epochs": 0},
    # Before it, run against the one-source default: the andrewmvd crops train too (a photo's
    # crops share a split), so they leave the external sets; their test crops are held-in
    # (the `held-in andrewmvd` column). "andrewmvd" is today's default.
    "andrewmvd-frozen": {"+source": ANDREWMVD, "train.finetune.epochs": 0},
    "andrewmvd": {"+source": ANDREWMVD},
    # as many fine-tune steps as the one-source default takes (twice the pictures, one epoch)
    "andrewmvd-ft1": {"+source": ANDREWMVD, "train.finetune.epochs": 1},
    # The other direction of leave-one-source-out: the crowd crops alone train, the
    # chandrikadeb7 archive is an external set.
    "andrewmvd-only-frozen": {"swap-source": ANDREWMVD, "train.finetune.epochs": 0},
}


def with_overrides(params: dict, overrides: dict) -> dict:
    """params with dotted keys set. Sources: `+source` (a spec) trains on one more source and
    drops it from the external sets (a source that trains is no longer external); `-source`
    (a name) stops training on one and scores it as an external set; `swap-source` (a spec)
    trains on that source alone, the others become external sets."""
    out = copy.deepcopy(params)
    sources, ext = out["data"]["sources"], out["evaluate"]["external"]
    for key, value in overrides.items():
        if key == "-source":
            gone = [s for s in sources if s["name"] == value]
            if not gone:
                raise ValueError(f"-source: {value!r} is not a source of params.yaml")
            sources[:] = [s for s in sources if s["name"] != value]
            ext += gone
            continue
        if key in ("+source", "swap-source"):
            if key == "+source" and any(s["name"] == value["name"] for s in sources):
                raise ValueError(f"+source: {value['name']!r} trains already")
            ext[:] = [e for e in ext if e["name"] != value["name"]]
            if key == "swap-source":
                ext += [s for s in sources if s["name"] != value["name"]]
                sources.clear()
            sources.append(value)
            continue
        node = out
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return out


def run_candidate(params: dict, work: Path) -> dict:
    """In `work`: the stages one candidate needs; returns what the metrics files say."""
    from stages import evaluate, external, robustness, slices, train
    from tests.conftest import run_data_stages

    os.chdir(work)
    # main() linked the pipeline's folders where the candidate shares them: make the rest
    if not Path("data/splits").exists():
        run_data_stages(params)
    if not Path("data/external").exists():
        from stages import external_data

        external_data.main(params, Path("data/external"), Path("metrics/external_data.json"))
    t0 = time.perf_counter()
    model = Path("models/model.safetensors")
    train.main(params, Path("data/splits"), model, Path("h.csv"), Path("metrics/train.json"))
    seconds = time.perf_counter() - t0
    test = evaluate.main(
        params, model, Path("data/splits/test.csv"), Path("data/splits/test_published.csv"),
        Path("metrics/test.json"), Path("metrics/predictions.csv"), Path("metrics/curves"),
    )  # fmt: skip
    ext = external.main(
        params, model, Path("data/external"), Path("data/splits"), Path("metrics/external"),
        Path("metrics/external_predictions"),
    )  # fmt: skip
    sl = slices.main(
        params, Path("metrics/predictions.csv"), Path("metrics/external_predictions"),
        Path("metrics/slices.csv"), Path("metrics/slices.json"), Path("slices.png"),
    )  # fmt: skip
    rob = robustness.main(
        params, model, Path("data/splits/test_published.csv"), Path("metrics/robustness.csv"),
        Path("metrics/robustness.json"), Path("robustness.png"),
    )  # fmt: skip
    per_source = {}
    import pandas as pd

    table = pd.read_csv("metrics/slices.csv")
    for r in table[table["family"] == "face_size"].itertuples():
        per_source[f"faces {r.slice}"] = round(r.accuracy, 4)
    if len(params["data"]["sources"]) > 1:  # held-in accuracy of each training source
        for r in table[table["family"] == "source"].itertuples():
            if r.slice in {s["name"] for s in params["data"]["sources"]}:
                per_source[f"held-in {r.slice}"] = round(r.accuracy, 4)
    return {
        "held_in": round(test["accuracy"], 4),
        **{f"ext {k}": round(v["accuracy"], 4) for k, v in ext.items()},
        "worst face size": "{worst_slice} {worst_accuracy:.4f}".format(**sl["face_size"]),
        **per_source,
        "corrupted": rob["mean_corrupted_accuracy"],
        "train s": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="comma-separated candidate names")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one candidate
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if args.one:
        sys.path.insert(0, str(ROOT))
        result = run_candidate(with_overrides(params, CANDIDATES[args.one]), args.work)
        print("RESULT " + json.dumps(result))
        return
    names = args.only.split(",") if args.only else list(CANDIDATES)
    rows = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"gen-{name}-") as tmp:
            work = Path(tmp)
            (work / "data").mkdir()
            try:
                cand = with_overrides(params, CANDIDATES[name])
            except ValueError as err:  # e.g. a +source candidate once the source trains
                print(f"{name}: skipped: {err}", file=sys.stderr)
                continue
            # A candidate with other sources prepares its own data, and its own external
            # sets where it scores one the pipeline has not prepared (run_candidate makes
            # whatever is not linked here).
            own = {"raw", "crops", "splits"} if cand["data"] != params["data"] else set()
            names = {e["name"] for e in params["evaluate"]["external"]}
            if any(e["name"] not in names for e in cand["evaluate"]["external"]):
                own.add("external")
            for part in ("raw", "crops", "external", "splits", "label_reviews"):
                if part not in own:
                    (work / "data" / part).symlink_to(ROOT / "data" / part)
            t0 = time.perf_counter()
            proc = subprocess.run(
                ["/usr/bin/time", "-v", sys.executable, __file__, "--one", name, "--work", work],
                capture_output=True, text=True, cwd=ROOT,
            )  # fmt: skip
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(
                    f"{name}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}",
                    file=sys.stderr,
                )
                continue
            rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
            peak = f"{int(rss.group(1)) / 2**20:.2f} GB" if rss else "-"
            rows[name] = json.loads(line[7:]) | {
                "wall s": round(time.perf_counter() - t0),
                "peak RSS": peak,
            }
            print(name, rows[name], flush=True)
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    print("| candidate | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(str(r.get(k, "-")) for k in keys) + " |")


if __name__ == "__main__":
    main()
