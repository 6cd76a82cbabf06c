"""Stage card: the model card beside a task's model (facemask.evaluation.card), from the
run's metrics files and the finder file; tasks/dvc.yaml runs it for every task."""

from __future__ import annotations

import argparse
from pathlib import Path

from facemask.config import exit_on_error
from facemask.evaluation.card import model_card
from facemask.params import load_stage_params

SECTIONS = ["model", "classes", "data", "train", "evaluate", "card"]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", type=Path, default=Path("metrics"), help="the run's metrics")
    parser.add_argument("--finder", type=Path, default=Path("models/finder.json"))
    parser.add_argument("--out", type=Path, default=Path("models/card.md"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    args = parser.parse_args()
    with exit_on_error("card"):
        params = load_stage_params(args.params, SECTIONS, args.task)
        text = model_card(params, args.task or "binary", args.metrics, args.finder)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"{args.out}: model card, {text.count(chr(10))} lines")
