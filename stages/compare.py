"""Stage compare: k-fold CV of backbones x {pretrained, scratch} x {frozen, fine-tuned}."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from facemask.config import cache_dir, exit_on_error, seed_everything, tune_malloc
from facemask.data.cache import decode_frame, to_tensor
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores
from facemask.training.compare import cross_validate, make_grid
from facemask.training.leaderboard import (
    add_speed,
    describe_cv,
    summarize,
    to_markdown,
    write_leaderboard,
)


def main(
    params: Mapping | Params, splits: Path, out: Path, section: str = "compare"
) -> pd.DataFrame:
    """Cross-validate every configuration on train+valid; write the leaderboard files.

    `section` names the params.yaml grid (models, weights, modes, image_size,
    finetune_epochs, optional repeats): `compare` is the backbone leaderboard.
    """
    params = stage_params(params, ["seed", "classes", "train", "cv", section])
    tune_malloc()
    use_free_cores()
    seed_everything(params.seed)
    cp = getattr(params, section)
    # The test split stays untouched: folds are drawn from train+valid, groups kept whole.
    dev = pd.concat([pd.read_csv(splits / f"{s}.csv") for s in ("train", "valid")])
    dev = dev.sort_values("path").reset_index(drop=True)
    images = to_tensor(decode_frame(dev, cp.image_size))

    grid, skipped = make_grid(cp.models, cp.weights, cp.modes)
    for cfg, why in skipped:
        print(f"skip {cfg.name}: {why}")
    # One JSON per finished (config, fold), keyed by its inputs and code: resumable.
    store = cache_dir()
    per_fold = cross_validate(
        params, section, dev, images, grid, store / "compare", store / "features"
    )
    board = add_speed(summarize(per_fold), len(params.classes), cp.image_size)
    header = describe_cv(params.cv.folds, len(dev), cp.repeats, cp.image_size, cp.finetune_epochs)
    write_leaderboard(per_fold, board, out, header, [f"{c.name}: {why}" for c, why in skipped])
    print(to_markdown(board))
    return board


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("splits", type=Path, help="folder with train.csv and valid.csv")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--out", type=Path, default=Path("leaderboard"))
    parser.add_argument("--section", default="compare", help="params.yaml section of the grid")
    args = parser.parse_args()
    with exit_on_error("compare"):
        params = load_stage_params(
            args.params, ["seed", "classes", "train", "cv", args.section], args.task
        )
        main(params, args.splits, args.out, args.section)
