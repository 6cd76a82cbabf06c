"""A trained model's predictions as a table: one row per picture, one column per class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from facemask.data.cache import Normalize, to_tensor
from facemask.models.factory import ModelCard
from facemask.models.predict import predict_logits


def predict_probs(
    model: nn.Module, card: ModelCard, images: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """Probabilities (N, classes) of uint8 NHWC images at the card's size, softmax at the
    card's temperature (fitted on the valid split: calibrated confidences)."""
    model = model.to(memory_format=torch.channels_last)
    logits = predict_logits(model, to_tensor(images), Normalize(card.mean, card.std), batch_size)
    return (logits / card.temperature).softmax(1).numpy()


def prediction_table(
    paths: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """path, [label,] predicted, confidence and one `p_<class>` column per class."""
    out = pd.DataFrame({"path": list(paths)})
    if labels is not None:
        out["label"] = list(labels)
    out["predicted"] = [classes[i] for i in probs.argmax(1)]
    out["confidence"] = probs.max(1).round(6)
    for i, c in enumerate(classes):
        out[f"p_{c}"] = probs[:, i].round(6)
    return out
