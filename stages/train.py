"""Stage train: transfer-learn a timm backbone (frozen head phase, optional fine-tune)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from facemask.config import cache_dir, code_fingerprint, exit_on_error, seed_everything, tune_malloc
from facemask.data.cache import Split, load_split
from facemask.models.factory import ModelCard, create_for_training, save_model, timm_net
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores
from facemask.training.distributed import close_distributed, init_distributed, torchrun_command
from facemask.training.live import epoch_logger, finish, open_live
from facemask.training.temperature import tune_offset, valid_temperature
from facemask.training.train import transfer_learn

SECTIONS = ("seed", "model", "classes", "train", "launch", "evaluate", "prepare")


def run_key(params: Params, *csvs: Path) -> str:
    """Identifies one training run (params, data and training code), to find its interrupted
    checkpoint: a checkpoint written by other code is never resumed."""
    spec = [params.seed, params.model, params.classes, params.train.model_dump()]
    spec.append(code_fingerprint("facemask.training.train"))
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for csv in csvs:
        h.update(csv.read_bytes())
    return h.hexdigest()[:16]


def main(
    params: Mapping | Params,
    splits: Path,
    model_out: Path,
    live_dir: Path,
    synthetic: Path | None = None,
) -> dict:
    """Train, save the model with its card; the per-epoch metrics and the summary go to the
    DVCLive folder `live_dir` (metrics.json, plots/).
    `synthetic`: an index of synthetic pictures (stage synthesize), added to train only."""
    params = stage_params(params, SECTIONS)
    tune_malloc()
    use_free_cores()
    t_start = time.perf_counter()
    tp, classes = params.train, list(params.classes)
    job = init_distributed(tp.distributed)  # torchrun: one of several processes
    seed_everything(params.seed)
    size = tp.image_size
    model, weights = create_for_training(params.model, len(classes), tp)
    cfg = timm_net(model).pretrained_cfg
    extra = [synthetic] if synthetic is not None else []
    train_df, train_x, train_y = load_split(splits / "train.csv", classes, size, extra)
    valid_df, valid_x, valid_y = load_split(splits / "valid.csv", classes, size)
    t_decoded = time.perf_counter()
    run = run_key(params, splits / "train.csv", splits / "valid.csv", *extra)
    checkpoint = cache_dir() / "checkpoints" / f"{run}.pt"
    valid = Split(valid_x, valid_y, valid_df["sha256"].tolist())
    # One process logs (rank 0): a run under torchrun writes each epoch once.
    live = open_live(live_dir) if job.is_main else None
    history, seconds = transfer_learn(
        model,
        Split(train_x, train_y, train_df["sha256"].tolist()),
        valid,
        tp,
        len(classes),
        cache_dir() / "features",
        seed=params.seed,
        checkpoint=checkpoint,
        device=job.device,
        on_epoch=epoch_logger(live) if live is not None else None,
    )
    close_distributed()  # the shared part ends here: rank 0 alone goes on and writes
    if live is None:
        return {}
    checkpoint.unlink(missing_ok=True)  # finished: a later run must start fresh
    temperature = valid_temperature(model, valid, tp, cache_dir() / "features", params.seed)
    offset = None
    if tp.tune_offset is not None:
        k = classes.index(tp.tune_offset)
        offset = tune_offset(model, valid, tp, cache_dir() / "features", temperature, k)
    t_end = time.perf_counter()

    card = ModelCard(params.model, classes, size, tuple(cfg["mean"]), tuple(cfg["std"]), weights)
    card.temperature = temperature
    card.abstain = params.evaluate.abstain  # the deployed model knows its threshold
    card.crop_margin = params.prepare.crop_margin  # ... and how its faces were cropped
    save_model(model, card, model_out)
    hist = pd.DataFrame(history).round(6)
    best = hist.loc[hist["valid_loss"].idxmin()]
    summary = {
        "weights": weights,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "best_valid_loss": round(float(best["valid_loss"]), 5),
        "best_valid_acc": round(float(best["valid_acc"]), 5),
        "epochs_head": int((hist["phase"] == "head").sum()),
        "epochs_finetune": int((hist["phase"] == "finetune").sum()),
        "train_pictures": len(train_df),
        "synthetic_pictures": len(train_df) - int(train_df["source"].ne("synthetic").sum()),
        "temperature": temperature,  # fitted on valid; predict and evaluate divide logits by it
        **({"offset": {tp.tune_offset: offset}} if offset is not None else {}),
        "seconds": {
            "decode": round(t_decoded - t_start, 1),
            **{k: round(v, 1) for k, v in seconds.items()},
            "total": round(t_end - t_start, 1),
        },
    }
    finish(live, summary)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("splits", type=Path, help="folder with train.csv and valid.csv")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--model-out", type=Path, default=Path("models/model.safetensors"))
    parser.add_argument(
        "--live", type=Path, default=Path("metrics/train"),
        help="DVCLive folder: metrics.json (the summary), plots/metrics/*.tsv",
    )  # fmt: skip
    parser.add_argument("--synthetic", type=Path, default=None, help="stage synthesize's index.csv")
    parser.add_argument(
        "--node-rank", type=int, default=0,
        help="this machine's place when launch.nodes > 1; 0 (the machine running DVC) writes",
    )  # fmt: skip
    args = parser.parse_args()
    with exit_on_error("train"):
        params = load_stage_params(args.params, SECTIONS, args.task)
        launch = params.launch
        cmd = torchrun_command(launch.processes, launch.nodes, launch.rendezvous, "stages.train",
                               sys.argv[1:], args.node_rank)  # fmt: skip
    if cmd:  # several processes: torchrun takes this process's place (signals reach it)
        print(f"train: {launch.processes} x {launch.nodes} processes: {shlex.join(cmd)}",
              file=sys.stderr, flush=True)  # fmt: skip
        os.execv(cmd[0], cmd)
    with exit_on_error("train"):  # bad input in the run too (weights, splits): one line, exit 2
        main(params, args.splits, args.model_out, args.live, args.synthetic)
