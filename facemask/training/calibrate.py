"""Temperature scaling: one scalar fitted on the valid split so confidences mean what they say."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facemask.data.cache import Split
from facemask.evaluation.calibration import fit_temperature
from facemask.training.features import feature_sources, frozen_features, use_bf16


@torch.no_grad()
def head_logits(model: nn.Module, split: Split, tp: dict, feature_root: Path) -> torch.Tensor:
    """Logits of the trained head on the split's cached frozen features (the backbone runs
    only for images whose features are not cached yet for these weights)."""
    sources = feature_sources(feature_root, model, split.images.shape[-1])
    features = frozen_features(sources, split, tp["batch_size"], bf16=use_bf16(tp))
    return model.get_classifier()(features)


def valid_temperature(model: nn.Module, valid: Split, tp: dict, feature_root: Path) -> float:
    """The softmax temperature that minimises the valid split's negative log-likelihood."""
    model.eval()
    logits = head_logits(model, valid, tp, feature_root)
    return fit_temperature(logits.numpy(), valid.labels.numpy())
