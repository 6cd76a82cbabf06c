"""Leave-one-source-out: train on every source but one, test on the one left out.

A model that learnt one archive's quirks (its cameras, crops, compression) scores well on a
random split of it and worse on another archive; this measures the second number from the
sources the pipeline already has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facemask.data.cache import Split, decode_frame, to_tensor
from facemask.evaluation.metrics import classification_metrics
from facemask.models.factory import create_for_training
from facemask.params import Params
from facemask.training.temperature import head_logits
from facemask.training.train import transfer_learn


def as_split(df: pd.DataFrame, classes: list[str], size: int) -> Split:
    """A frame's pictures (decode cache), label indices and content keys."""
    labels = torch.tensor([classes.index(c) for c in df["label"]], dtype=torch.long)
    return Split(to_tensor(decode_frame(df, size)), labels, df["sha256"].tolist())


def held_out_frames(
    splits: dict[str, pd.DataFrame], source: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, valid, test) for leaving `source` out: the other sources' train and valid
    splits teach and early-stop; every picture of `source` (one per copy group) tests.
    No source's own test split is ever trained on."""
    train, valid = (splits[s][splits[s]["source"] != source] for s in ("train", "valid"))
    every = pd.concat(splits.values(), ignore_index=True)
    test = every[every["source"] == source]
    if "copies" in test:
        test = test.drop_duplicates("copies")
    return train.reset_index(drop=True), valid.reset_index(drop=True), test.reset_index(drop=True)


def leave_one_source_out(
    splits: dict[str, pd.DataFrame],
    params: Params,
    feature_root: Path,
) -> pd.DataFrame:
    """One row per source: pictures, accuracy, errors and macro F1 of a model trained without it.

    Uses the train stage's recipe (params `model`, `train.*`); frozen features are cached, so
    each left-out source costs a head fit (seconds) once the features exist.
    """
    classes, tp, seed = list(params.classes), params.train, params.seed
    sources = sorted(set(pd.concat(splits.values())["source"]))
    if len(sources) < 2:
        raise ValueError(f"leave-one-source-out needs 2+ sources in data.sources, not {sources}")
    rows = []
    for source in sources:
        train, valid, test = held_out_frames(splits, source)
        torch.manual_seed(seed)
        model, _ = create_for_training(params.model, len(classes), tp)
        size = tp.image_size
        transfer_learn(
            model, as_split(train, classes, size), as_split(valid, classes, size), tp,
            len(classes), feature_root, seed=seed,
        )  # fmt: skip
        logits = head_logits(model, as_split(test, classes, size), tp, feature_root)
        predicted = [classes[i] for i in logits.argmax(1).tolist()]
        m = classification_metrics(test["label"], predicted, classes)
        rows.append(
            {"left_out": source, "trained_on": len(train), "n": m["n"], "accuracy": m["accuracy"],
             "errors": m["errors"], "macro_f1": m["macro"]["f1"]}
        )  # fmt: skip
    return pd.DataFrame(rows)


def loso_summary(table: pd.DataFrame) -> dict:
    """Mean and worst accuracy over the left-out sources, and each source's row."""
    worst = table.loc[table["accuracy"].idxmin()]
    return {
        "mean_accuracy": round(float(np.mean(table["accuracy"])), 6),
        "worst_accuracy": round(float(worst["accuracy"]), 6),
        "worst_source": str(worst["left_out"]),
        "per_source": {
            r.left_out: {
                "n": int(r.n),
                "accuracy": round(float(r.accuracy), 6),
                "errors": int(r.errors),
            }
            for r in table.itertuples()
        },
    }
