"""How far one three-class run is from the next: the committed task retrained with other
seeds, the seeds' ensemble, and a worn-wrong offset fitted on valid.

    python -m benchmarks.three_class_seeds --seeds 1 2 --work /tmp/seeds  # after make three-class
    python -m benchmarks.three_class_seeds --set 'train.finetune.augment.scale=[0.6, 1.0]' \
        --seeds 1 2 --work /tmp/jit --out benchmarks/results/three_class_seeds_crop_jitter.md

Every seed (three_class/params.yaml's, 42, and --seeds) trains one model with the task's
params but its seed, on the pipeline's splits (drawn with seed 42) and synthetic pictures:
only the draws of training change (head and fine-tune order, augmentation, dropout, degraded
views). The pipeline itself ships four members joined (stage ensemble: params' model at
seeds 42, 1 and 2, EfficientNet-Lite0 at 42); here each seed is a single model with its own
offset, as the task trained before. Each then runs the stages evaluate, external
(mask_types) and scenes. A seed whose outputs are in --work already is read back, not
retrained. --set: Hydra overrides composed over task=three_class, as `facemask compose`
does; --no-synthesis: without the synthesize stage's pictures (a no-op while the task draws
none).

Also reported:
- mean of the seeds: each column's mean over the seeds' rows (the figure to judge a recipe by);
- ensemble: the mean of the seeds' probabilities, on the test crops and mask_types (the
  scenes stage keeps no per-face probabilities);
- pipeline: the model three_class/dvc.yaml ships, read back from metrics/three_class/;
- valid offset: per model, the offset added to the worn-wrong log-probability that gives
  the best macro F1 on the valid crops (grid -2 to 2, step 0.25; ties: the smallest offset).
  A task with `train.tune_offset` fits it in the train stage already (its head carries it),
  so there these rows show what a second fit on the full net's logits would add.

Writes a markdown table (--out; default benchmarks/results/three_class_seeds.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import yaml

from benchmarks.synthesis_ablation import WRONG, other_sets, scenes_f1, train_and_test
from facemask.config import tune_malloc
from facemask.evaluation.calibration import softmax
from facemask.evaluation.metrics import classification_metrics
from facemask.evaluation.report import score_frame
from facemask.models.factory import load_model
from facemask.params import compose
from facemask.training.calibrate import best_offset as fit_offset

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "three_class" / "params.yaml"
SPLITS = ROOT / "data" / "three_class" / "splits"
SYNTH = ROOT / "data" / "three_class" / "synth" / "index.csv"


class SeedRun(NamedTuple):
    folder: Path  # test.json, external_predictions/, scenes.json, train.json
    model: Path
    predictions: Path  # the test crops'


def seed_run(seed: int, task: dict, work: Path, synth: Path | None) -> SeedRun:
    """`task` with `seed` trained into `work` on the synthetic pictures `synth` (None: none),
    or read back from there when it finished before."""
    folder = work / f"s{seed}"
    run = SeedRun(folder, folder / "model.safetensors", folder / "pred.csv")  # train_and_test's
    if (folder / "scenes.json").is_file():
        return run
    folder.mkdir(parents=True, exist_ok=True)
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump({**task, "seed": seed}, sort_keys=False))
    train_and_test(params, SPLITS, synth, folder)
    other_sets(params, run.model, SPLITS, folder)
    return run


def outputs(run: SeedRun, classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A run's test-crop and mask_types probabilities, and its scenes metrics."""
    masks = run.folder / "external_predictions" / "mask_types.csv"
    scenes = json.loads((run.folder / "scenes.json").read_text())
    return probabilities(run.predictions, classes), probabilities(masks, classes), scenes


def probabilities(csv: Path, classes: list[str]) -> pd.DataFrame:
    """A predictions CSV's per-class probabilities and label, indexed by path."""
    df = pd.read_csv(csv).set_index("path")
    return df[["label", *[f"p_{c}" for c in classes]]]


def valid_probabilities(model_file: Path) -> pd.DataFrame:
    """The model's calibrated probabilities on the valid crops (as evaluate computes them)."""
    model, card = load_model(model_file)
    valid = pd.read_csv(SPLITS / "valid.csv")
    scored = score_frame(model, card, valid, 64)
    probs = softmax(scored.logits, card.temperature)
    cols = {f"p_{c}": probs[:, i] for i, c in enumerate(card.classes)}
    return pd.DataFrame({"label": valid["label"].to_numpy(), **cols}, index=valid["path"])


def log_probabilities(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The frame's p_<class> columns as log-probabilities (a zero kept finite)."""
    return np.log(frame[[f"p_{c}" for c in classes]].to_numpy().clip(1e-9))


def scores(frame: pd.DataFrame, classes: list[str], offset: float = 0.0) -> dict[str, float]:
    """Worn-wrong F1, macro F1 and accuracy of the argmax after the worn-wrong offset."""
    logp = log_probabilities(frame, classes)
    logp[:, classes.index(WRONG)] += offset
    m = classification_metrics(frame["label"], np.array(classes)[logp.argmax(1)], classes)
    return {
        "wrong": m["per_class"][WRONG]["f1"],
        "macro": m["macro"]["f1"],
        "accuracy": m["accuracy"],
    }


def best_offset(valid: pd.DataFrame, classes: list[str]) -> float:
    """The train stage's fit (train.tune_offset) on the valid crops' probabilities."""
    labels = valid["label"].map(classes.index).to_numpy()
    return fit_offset(log_probabilities(valid, classes), labels, classes.index(WRONG))


def ensemble(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The mean of the models' probabilities, row by row (aligned on the path)."""
    probs = sum(f.drop(columns="label") for f in frames) / len(frames)
    return probs.assign(label=frames[0]["label"])


def pipeline_row(classes: list[str]) -> dict:
    """The model three_class/dvc.yaml ships (its members joined by stage ensemble), read
    back from metrics/three_class/: the figures to set against one seed's."""
    folder = ROOT / "metrics" / "three_class"
    run = SeedRun(
        folder, ROOT / "models" / "three_class" / "model.safetensors", folder / "predictions.csv"
    )
    crops, masks, scenes = outputs(run, classes)
    members = json.loads((folder / "train.json").read_text()).get("members", [])
    return row(
        f"pipeline: {len(members) or 1} member(s) joined",
        scores(crops, classes), scores(masks, classes), scenes_f1(scenes, WRONG), {},
    )  # fmt: skip


def row(name: str, crops: dict, mask_types: dict, scenes: float | None, extra: dict) -> dict:
    """One table row; the mean over the three sets only where the scenes have a figure."""
    mean = None if scenes is None else (crops["wrong"] + scenes + mask_types["wrong"]) / 3
    return {
        "model": name,
        "worn wrong F1, test crops": round(crops["wrong"], 3),
        "worn wrong F1, test scenes": round(scenes, 3) if scenes is not None else None,
        "worn wrong F1, mask_types": round(mask_types["wrong"], 3),
        "worn wrong F1, mean": round(mean, 3) if mean is not None else None,
        "test accuracy": round(crops["accuracy"], 4),
        "test macro F1": round(crops["macro"], 4),
        "mask_types macro F1": round(mask_types["macro"], 4),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="other than params'")
    parser.add_argument("--work", type=Path, required=True, help="folder for the seeds' runs")
    parser.add_argument(
        "--no-synthesis", action="store_true", help="train without the synthetic pictures"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a Hydra override"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/three_class_seeds.md"
    )
    args = parser.parse_args()
    tune_malloc()
    task = yaml.safe_load(PARAMS.read_text())
    variant = task
    if args.set:
        args.work.mkdir(parents=True, exist_ok=True)
        composed = args.work / "variant.yaml"
        compose(["task=three_class", *args.set], composed)
        variant = yaml.safe_load(composed.read_text())
    synth = None if args.no_synthesis else SYNTH
    classes = task["classes"]
    rows, seed_rows, crops, masks = [], [], [], []
    # dict.fromkeys: params' seed named again in --seeds would count one run twice.
    for seed in dict.fromkeys([task["seed"], *args.seeds]):
        run = seed_run(seed, variant, args.work, synth)
        crop_probs, mask_probs, scenes = outputs(run, classes)
        crops.append(crop_probs)
        masks.append(mask_probs)
        train = json.loads((run.folder / "train.json").read_text())
        offset = best_offset(valid_probabilities(run.model), classes)
        seed_rows.append(
            row(f"seed {seed}", scores(crops[-1], classes), scores(masks[-1], classes),
                scenes_f1(scenes, WRONG), {"train s": train["seconds"]["total"]})
        )  # fmt: skip
        rows += [
            seed_rows[-1],
            row(f"seed {seed}, valid offset {offset:+.2f}", scores(crops[-1], classes, offset),
                scores(masks[-1], classes, offset), None, {}),
        ]  # fmt: skip
        print(*rows[-2:], sep="\n", flush=True)
    seeds = pd.DataFrame(seed_rows).drop(columns="model")
    rows.append({"model": f"mean of the {len(crops)} seeds", **seeds.mean().round(4).to_dict()})
    rows.append(
        row(f"ensemble of {len(crops)} (mean probability)", scores(ensemble(crops), classes),
            scores(ensemble(masks), classes), None, {})
    )  # fmt: skip
    rows.append(pipeline_row(classes))
    table = pd.DataFrame(rows).to_markdown(index=False)
    n = int(crops[0]["label"].eq(WRONG).sum())
    wrong = seeds["worn wrong F1, test crops"]
    text = (
        f"{table}\n\nTest crops: {len(crops[0])}, of them {n} worn wrong; mask_types: "
        f"{len(masks[0])}. Worn-wrong F1 on the test crops over the {len(seeds)} seeds: "
        f"{min(wrong):.3f} to {max(wrong):.3f}.\n"
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
