"""Stage ensemble: the members (stage train_member) joined into one model that answers with
the mean of their calibrated logits, its temperature and class offset fitted on valid."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path

from facemask.config import cache_dir, exit_on_error, tune_malloc
from facemask.data.cache import Split, load_split
from facemask.models.ensemble import load_members
from facemask.models.factory import save_model
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores
from facemask.training.temperature import tune_offset, valid_temperature

SECTIONS = ("seed", "classes", "train")


def main(
    params: Mapping | Params, members: list[Path], splits: Path, model_out: Path, metrics_json: Path
) -> dict:
    """Join the member files, fit the temperature (and `train.tune_offset`'s offset) on the
    valid split, save the model and a summary."""
    params = stage_params(params, SECTIONS)
    tune_malloc()
    use_free_cores()
    t0 = time.perf_counter()
    tp, classes = params.train, list(params.classes)
    model, card = load_members(members)
    if card.classes != classes:
        raise ValueError(f"{members[0]}: classes {card.classes}, params.yaml has {classes}")
    df, images, labels = load_split(splits / "valid.csv", classes, card.image_size)
    valid = Split(images, labels, df["sha256"].tolist())
    features = cache_dir() / "features"  # the members' valid features are cached already
    card.temperature = valid_temperature(model, valid, tp, features, params.seed)
    offset = None
    if tp.tune_offset is not None:
        k = classes.index(tp.tune_offset)
        offset = tune_offset(model, valid, tp, features, card.temperature, k)
    save_model(model, card, model_out)
    summary = {
        "members": [str(m) for m in members],
        "temperature": card.temperature,
        **({"offset": {tp.tune_offset: offset}} if offset is not None else {}),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    metrics_json.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("members", type=Path, nargs="+", help="the members' model files")
    parser.add_argument("--splits", type=Path, required=True, help="folder with valid.csv")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--model-out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args()
    with exit_on_error("ensemble"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.members,
            args.splits,
            args.model_out,
            args.metrics,
        )
