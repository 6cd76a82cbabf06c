"""Score a labelled frame: predictions, metrics, calibration and the answered part."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from facemask.data.cache import Normalize, decode_frame, to_tensor
from facemask.evaluation.calibration import abstain_summary, calibration_report, softmax
from facemask.evaluation.curves import curve_metrics
from facemask.evaluation.metrics import classification_metrics
from facemask.evaluation.predictions import prediction_table
from facemask.models.factory import ModelCard
from facemask.models.predict import predict_logits

# Index columns carried into prediction tables, for slices (face size, source, attributes).
CONTEXT_COLUMNS = ("source", "width", "height", "sha256", "copies")


@dataclass
class Scored:
    """A frame scored by a model: the table, raw logits and label indices."""

    table: pd.DataFrame
    logits: np.ndarray
    labels: np.ndarray


def frame_logits(
    model: nn.Module, card: ModelCard, df: pd.DataFrame, batch_size: int, tta: Sequence[str] = ()
) -> np.ndarray:
    """Raw logits of a split-style frame (`path`, `sha256`), via the shared decode cache;
    averaged over test-time views `tta` (see models.predict.TTA_VIEWS)."""
    import torch

    model = model.to(memory_format=torch.channels_last)
    images = to_tensor(decode_frame(df, card.image_size))
    norm = Normalize(card.mean, card.std)
    return predict_logits(model, images, norm, batch_size, tta=tuple(tta)).numpy()


def score_frame(
    model: nn.Module, card: ModelCard, df: pd.DataFrame, batch_size: int, tta: Sequence[str] = ()
) -> Scored:
    """Predict a labelled frame; probabilities use the card's temperature (as predict does)."""
    unknown = set(df["label"]) - set(card.classes)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not classes of the model {card.classes}")
    logits = (
        frame_logits(model, card, df, batch_size, tta)
        if len(df)
        else np.zeros((0, len(card.classes)))
    )
    probs = softmax(logits, card.temperature)
    table = prediction_table(df["path"], probs, card.classes, df["label"])
    extra = [c for c in df.columns if c in CONTEXT_COLUMNS or c.startswith("attr_")]
    table = pd.concat([table, df[extra].reset_index(drop=True)], axis=1)
    labels = np.array([card.classes.index(c) for c in df["label"]], dtype=np.int64)
    return Scored(table, logits, labels)


def frame_metrics(scored: Scored, card: ModelCard, abstain: float, bins: int = 15) -> dict:
    """test.json's keys: classification metrics, calibration before/after the temperature,
    ROC/PR areas, and coverage and accuracy of the answered part at the abstain threshold."""
    t = scored.table
    out = classification_metrics(t["label"], t["predicted"], card.classes)
    if not len(t):
        return out
    probs = softmax(scored.logits, card.temperature)
    out["calibration"] = calibration_report(scored.logits, scored.labels, card.temperature, bins)
    out["abstain"] = abstain_summary(probs, scored.labels, abstain)
    out["auc"] = curve_metrics(probs, scored.labels, card.classes)
    if "source" in t and t["source"].nunique() > 1:
        out["per_source"] = per_source(t, card.classes)
    return out


def per_source(table: pd.DataFrame, classes: Sequence[str]) -> dict:
    """Accuracy, count and errors of each source in a prediction table (a split drawn from
    several training sources: how each was learnt, not how the model does elsewhere)."""
    out = {}
    for name, part in table.groupby("source", sort=True):
        m = classification_metrics(part["label"], part["predicted"], classes)
        out[str(name)] = {k: m[k] for k in ("accuracy", "n", "errors")}
    return out
