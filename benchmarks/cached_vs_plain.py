"""The cached head phase against a plain loop that decodes and runs the backbone every epoch.

Both train the same linear head on the same frozen-backbone features; the plain loop
recomputes them each epoch (decode JPEGs, resize, forward pass), as a straightforward
PyTorch Dataset/DataLoader loop would. Without augmentation the features, and therefore
the accuracy curve, are identical, so the plain loop is timed for a few real epochs and
its per-epoch cost is stable; the cached path is timed end to end, cold and warm.

    python benchmarks/cached_vs_plain.py --size 224 --plain-epochs 3 --target 0.99
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import pandas as pd
import torch

from facemask.config import seed_everything, tune_malloc
from facemask.data.cache import ArrayStore, Normalize, Split, load_images, to_tensor
from facemask.models.factory import create_model
from facemask.params import Params, load_stage_params
from facemask.training.features import compute_features, use_bf16
from facemask.training.train import fit_head, transfer_learn


def load(split: str, classes: list[str], size: int, store: ArrayStore | None) -> Split:
    df = pd.read_csv(f"data/splits/{split}.csv")
    images = to_tensor(load_images(df["path"].tolist(), df["sha256"].tolist(), size, store))
    return Split(
        images, torch.tensor([classes.index(c) for c in df["label"]]), df["sha256"].tolist()
    )


def plain_epochs(params: Params, size: int, epochs: int) -> list[float]:
    """Seconds per epoch when every epoch decodes and runs the backbone again."""
    classes, tp = params.classes, params.train
    seed_everything(params.seed)
    model, _ = create_model(params.model, len(classes))
    model = model.to(memory_format=torch.channels_last)
    norm = Normalize(model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    head = model.get_classifier()
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        train, valid = (load(s, classes, size, None) for s in ("train", "valid"))
        # Same precision as the cached path, so the ratio measures caching alone.
        bf16 = use_bf16(tp.bf16_features)
        f_train = compute_features(model, train.images, norm, tp.batch_size, bf16=bf16)
        f_valid = compute_features(model, valid.images, norm, tp.batch_size, bf16=bf16)
        fit_head(head, f_train, train.labels, f_valid, valid.labels, epochs=1, patience=0)
        times.append(time.perf_counter() - t)
        print(f"plain epoch: {times[-1]:.1f} s")
    return times


def cached_run(params: Params, size: int) -> tuple[float, list[dict]]:
    """Seconds for the pipeline's whole head phase (decode, features, head epochs)."""
    from facemask.config import cache_dir

    classes, tp = params.classes, params.train
    tp = tp.model_copy(
        update={
            "finetune": tp.finetune.model_copy(update={"epochs": 0}),
            "head": tp.head.model_copy(update={"flip_views": False}),
        }
    )
    seed_everything(params.seed)
    t = time.perf_counter()
    store = ArrayStore(cache_dir() / "images")
    train, valid = (load(s, classes, size, store) for s in ("train", "valid"))
    model, _ = create_model(params.model, len(classes))
    model = model.to(memory_format=torch.channels_last)
    features = cache_dir() / "features"
    history, _ = transfer_learn(model, train, valid, tp, len(classes), features, params.seed)
    return time.perf_counter() - t, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--plain-epochs", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.995, help="valid accuracy to reach")
    args = parser.parse_args()
    tune_malloc()
    params = load_stage_params("params.yaml", ("seed", "model", "classes", "train"))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FACEMASK_CACHE"] = tmp  # cold: nothing decoded or extracted yet
        cold, history = cached_run(params, args.size)
        warm, _ = cached_run(params, args.size)
    per_epoch = plain_epochs(params, args.size, args.plain_epochs)
    plain = sum(per_epoch) / len(per_epoch)
    n = len(history)
    hit = next((r["epoch"] for r in history if r["valid_acc"] >= args.target), None)
    head_s = sum(r["seconds"] for r in history)
    rows = [
        {
            "path": "plain: decode + forward every epoch",
            "seconds per epoch": f"{plain:.1f}",
            f"{n} epochs (s)": f"{plain * n:.0f}",
            f"to valid acc >= {args.target}": f"{plain * hit:.0f} s" if hit else "not reached",
        },
        {
            "path": "cached, cold (decode + features once)",
            "seconds per epoch": f"{head_s / n:.2f}",
            f"{n} epochs (s)": f"{cold:.0f}",
            f"to valid acc >= {args.target}": f"{cold - head_s + head_s * hit / n:.0f} s"
            if hit
            else "not reached",
        },
        {
            "path": "cached, warm (later experiments)",
            "seconds per epoch": f"{head_s / n:.2f}",
            f"{n} epochs (s)": f"{warm:.0f}",
            f"to valid acc >= {args.target}": "-",
        },
    ]
    print(
        f"\n{params.model} @ {args.size} px, {n} head epochs (early stopping), "
        f"target reached at epoch {hit}\n"
    )
    print(pd.DataFrame(rows).to_markdown(index=False))
    print(f"\nspeed-up, cold cache: {plain * n / cold:.1f}x; warm: {plain * n / warm:.1f}x")
    print(f"plain per-epoch times: {[round(t, 1) for t in per_epoch]}")


if __name__ == "__main__":
    main()
