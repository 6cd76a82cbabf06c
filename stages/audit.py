"""Stage audit: out-of-fold label check over every split; the pictures worth a second look.

Each picture is predicted by a linear head (on the cached frozen features of the model in
params.yaml) that never saw it; cleanlab flags labels that head confidently disagrees
with. A person reviews the flagged pictures (plots/label_audit.png) and records each
decision in split.label_reviews. The audit never changes a label itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from facemask.config import cache_dir, load_params, seed_everything, tune_malloc
from facemask.data.cache import Split, decode_frame, load_split
from facemask.data.reviews import load_label_reviews, reviewed_mask
from facemask.data.split import SPLITS
from facemask.explain.figures import plot_grid
from facemask.models.factory import create_for_training
from facemask.training.audit import label_issues, out_of_fold_probs
from facemask.training.features import feature_sources, frozen_features, use_bf16


def _short(name: str, width: int = 22) -> str:
    """A file name cut to fit under a tile (the CSV has the whole path)."""
    return name if len(name) <= width else name[: width - 3] + "..."


def main(params: dict, splits: Path, out_csv: Path, metrics_json: Path, gallery: Path) -> dict:
    """Write the flagged (and reviewed) pictures, audit metrics and a review gallery."""
    tune_malloc()
    seed_everything(params["seed"])
    tp, a, classes = params["train"], params["audit"], list(params["classes"])
    size = tp["image_size"]
    model, _ = create_for_training(params["model"], len(classes), tp)
    bf16 = use_bf16(tp)
    # Shared with the train stage through the cache: whichever runs first computes them.
    sources = feature_sources(cache_dir() / "features", model, size)
    frames, features, flipped = [], [], []
    for name in SPLITS:  # one split's pixels in memory at a time
        df, x, y = load_split(splits / f"{name}.csv", classes, size)
        split = Split(x, y, df["sha256"].tolist())
        frames.append(df.assign(split=name))
        features.append(frozen_features(sources, split, tp["batch_size"], bf16=bf16))
        if a["flip_views"]:
            flipped.append(frozen_features(sources, split, tp["batch_size"], True, bf16))
    df = pd.concat(frames, ignore_index=True)
    probs = out_of_fold_probs(
        df,
        torch.cat(features),
        a["folds"],
        classes,
        tp["head"],
        torch.cat(flipped) if flipped else None,
        tp.get("class_weights"),
        params["seed"],
    )
    reviews, _ = load_label_reviews(params["split"].get("label_reviews"), df, classes)
    table = label_issues(df, probs, classes, reviewed_mask(df, reviews))
    # cleanlab's flags are few and strict; every out-of-fold error is worth a look too.
    wrong = table["predicted"] != table["label"]
    suspect = table["issue"] | wrong
    shown = table[suspect | table["reviewed"]]
    for path in (out_csv, metrics_json, gallery):
        path.parent.mkdir(parents=True, exist_ok=True)
    shown.to_csv(out_csv, index=False, lineterminator="\n")

    todo = table[suspect & ~table["reviewed"]].head(a["gallery"])
    tiles = list(decode_frame(todo, size))
    captions = [
        f"{_short(Path(r.path).name)} ({r.split})\n"
        f"{r.label} -> {r.predicted}, p {r.self_confidence:.2f}"
        for r in todo.itertuples()
    ]
    n_todo = int((suspect & ~table["reviewed"]).sum())
    plot_grid(
        tiles,
        captions,
        gallery,
        title=f"Label audit: {n_todo} pictures to review (flagged or out-of-fold errors)"
        + (f", first {len(todo)} shown" if n_todo > len(todo) else ""),
    )
    metrics = {
        "pictures": len(table),
        "out_of_fold_accuracy": round(1 - float(wrong.mean()), 5),
        "out_of_fold_errors": int(wrong.sum()),
        "flagged": int(table["issue"].sum()),  # by cleanlab
        "to_review": n_todo,  # flagged or out-of-fold errors, not yet reviewed
        "to_review_per_split": {
            s: int((suspect & ~table["reviewed"] & (table["split"] == s)).sum()) for s in SPLITS
        },
        "reviewed": int(table["reviewed"].sum()),
        "relabelled": int((table["label"] != table["published_label"]).sum()),
    }
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("splits", type=Path, help="folder with train/valid/test CSVs")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("metrics/label_audit.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/audit.json"))
    parser.add_argument("--gallery", type=Path, default=Path("plots/label_audit.png"))
    args = parser.parse_args()
    main(load_params(args.params), args.splits, args.out, args.metrics, args.gallery)
