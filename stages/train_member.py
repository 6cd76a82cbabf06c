"""Stage train_member: the train stage for one member of an ensemble (three_class/dvc.yaml's
`foreach`): params.yaml's training at another seed, optionally of another backbone, without
the class offset, which the ensemble stage fits on the members' mean instead."""

from __future__ import annotations

import argparse
from pathlib import Path

from facemask.config import exit_on_error
from facemask.params import Params, load_stage_params
from stages import train


def member_params(params: Params, seed: int, model: str | None = None) -> Params:
    """params.yaml's training at `seed` (of `model`, where given), with no class offset."""
    tp = params.train.model_copy(update={"tune_offset": None})
    return params.model_copy(update={"seed": seed, "train": tp, "model": model or params.model})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("splits", type=Path, help="folder with train.csv and valid.csv")
    parser.add_argument("--seed", type=int, required=True, help="this member's training seed")
    parser.add_argument("--model", default=None, help="this member's backbone (params' model)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--model-out", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True, help="this member's DVCLive folder")
    parser.add_argument("--synthetic", type=Path, default=None, help="stage synthesize's index.csv")
    args = parser.parse_args()
    with exit_on_error("train_member"):
        params = load_stage_params(args.params, train.SECTIONS, args.task)
        params = member_params(params, args.seed, args.model)
        train.main(params, args.splits, args.model_out, args.live, args.synthetic)
