"""Stage train: transfer-learn a timm backbone (frozen head phase, optional fine-tune)."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import pandas as pd
import torch

from facemask.config import cache_dir, load_params, seed_everything, tune_malloc
from facemask.data import (
    ArrayStore,
    Normalize,
    cached_features,
    create_augment,
    load_images,
    to_tensor,
)
from facemask.models import ModelCard, backbone_fingerprint, create_model, save_model
from facemask.train import class_weights, fine_tune, fit_head


def load_split(
    csv: Path, classes: list[str], size: int
) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
    """A split's rows, its images (uint8 NCHW, from the decode cache) and label indices."""
    df = pd.read_csv(csv)
    unknown = set(df["label"]) - set(classes)
    if unknown:
        raise ValueError(f"{csv}: labels {sorted(unknown)} are not in classes {classes}")
    images = load_images(
        df["path"].tolist(), df["sha256"].tolist(), size, ArrayStore(cache_dir() / "images")
    )
    labels = torch.tensor([classes.index(c) for c in df["label"]])
    return df, to_tensor(images), labels


def run_key(params: dict, *csvs: Path) -> str:
    """Identifies one training run (params + data), to find its interrupted checkpoint."""
    h = hashlib.sha256(
        json.dumps(
            [params[k] for k in ("seed", "model", "classes", "train")], sort_keys=True, default=str
        ).encode()
    )
    for csv in csvs:
        h.update(csv.read_bytes())
    return h.hexdigest()[:16]


def main(
    params: dict, splits: Path, model_out: Path, history_csv: Path, metrics_json: Path
) -> dict:
    """Train, save the model with its card, and write the per-epoch history and a summary."""
    tune_malloc()
    t_start = time.perf_counter()
    tp, classes = params["train"], list(params["classes"])
    seed_everything(params["seed"])
    size = tp["image_size"]
    model, weights = create_model(
        params["model"],
        len(classes),
        tp["pretrained"],
        tp.get("weights_path"),
        tp.get("require_pretrained", False),
    )
    model = model.to(memory_format=torch.channels_last)
    cfg = model.pretrained_cfg
    norm = Normalize(cfg["mean"], cfg["std"])
    train_df, train_x, train_y = load_split(splits / "train.csv", classes, size)
    valid_df, valid_x, valid_y = load_split(splits / "valid.csv", classes, size)
    train_keys = train_df["sha256"].tolist()
    t_decoded = time.perf_counter()

    # Phase 1: the backbone is frozen, so its features are a pure function of
    # (weights, size, normalisation, image): computed once, cached across runs.
    store = ArrayStore(
        cache_dir()
        / "features"
        / "-".join(
            [
                params["model"],
                backbone_fingerprint(model),
                str(size),
                hashlib.sha256(repr((cfg["mean"], cfg["std"])).encode()).hexdigest()[:8],
            ]
        )
    )
    h = tp["head"]
    bs = tp["batch_size"]
    f_train = cached_features(model, train_x, train_keys, norm, store, bs)
    y_head = train_y
    if h["flip_views"]:
        f_train = torch.cat(
            [f_train, cached_features(model, train_x, train_keys, norm, store, bs, flip=True)]
        )
        y_head = torch.cat([train_y, train_y])
    f_valid = cached_features(model, valid_x, valid_df["sha256"].tolist(), norm, store, bs)
    weight = class_weights(train_y, len(classes), tp.get("class_weights"))
    t_features = time.perf_counter()
    history = fit_head(
        model.get_classifier(),
        f_train,
        y_head,
        f_valid,
        valid_y,
        epochs=h["epochs"],
        lr=h["lr"],
        weight_decay=h["weight_decay"],
        dropout=h["dropout"],
        label_smoothing=h["label_smoothing"],
        patience=h["patience"],
        class_weight=weight,
    )
    t_head = time.perf_counter()

    ft = tp["finetune"]
    if ft["epochs"] > 0:
        checkpoint = (
            cache_dir()
            / "checkpoints"
            / f"{run_key(params, splits / 'train.csv', splits / 'valid.csv')}.pt"
        )
        augment = create_augment(size, **ft["augment"])
        history += fine_tune(
            model,
            norm,
            train_x,
            train_y,
            valid_x,
            valid_y,
            augment,
            epochs=ft["epochs"],
            lr=ft["lr"],
            backbone_lr_scale=ft["backbone_lr_scale"],
            weight_decay=ft["weight_decay"],
            batch_size=ft["batch_size"],
            schedule=ft["schedule"],
            warmup=ft["warmup"],
            label_smoothing=ft["label_smoothing"],
            patience=ft["patience"],
            freeze_bn=ft["freeze_bn"],
            checkpoint=checkpoint,
            seed=params["seed"],
            class_weight=weight,
        )
        checkpoint.unlink(missing_ok=True)  # finished: a later run must start fresh
    t_end = time.perf_counter()

    card = ModelCard(params["model"], classes, size, tuple(cfg["mean"]), tuple(cfg["std"]), weights)
    save_model(model, card, model_out)
    history_csv.parent.mkdir(parents=True, exist_ok=True)
    hist = pd.DataFrame(history)
    hist.insert(0, "step", range(1, len(hist) + 1))  # one x axis across both phases
    # Timings stay out of the plot file so a rerun with the same result is byte-identical.
    hist = hist.drop(columns="seconds")
    hist.round(6).to_csv(history_csv, index=False, lineterminator="\n")
    best = hist.loc[hist["valid_loss"].idxmin()]
    summary = {
        "weights": weights,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "best_valid_loss": round(float(best["valid_loss"]), 5),
        "best_valid_acc": round(float(best["valid_acc"]), 5),
        "epochs_head": int((hist["phase"] == "head").sum()),
        "epochs_finetune": int((hist["phase"] == "finetune").sum()),
        "seconds": {
            "decode": round(t_decoded - t_start, 1),
            "features": round(t_features - t_decoded, 1),
            "head": round(t_head - t_features, 1),
            "finetune": round(t_end - t_head, 1),
            "total": round(t_end - t_start, 1),
        },
    }
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    metrics_json.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("splits", type=Path, help="folder with train.csv and valid.csv")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model-out", type=Path, default=Path("models/model.safetensors"))
    parser.add_argument("--history", type=Path, default=Path("metrics/train_history.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    args = parser.parse_args()
    main(load_params(args.params), args.splits, args.model_out, args.history, args.metrics)
