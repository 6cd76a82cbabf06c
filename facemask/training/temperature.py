"""Temperature scaling: one scalar fitted on the valid split so confidences mean what they say."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from facemask.data.cache import Split
from facemask.evaluation.calibration import fit_temperature
from facemask.models.factory import timm_net
from facemask.params import TrainParams
from facemask.training.augment import Transform, named_degraded_view
from facemask.training.features import feature_sources, frozen_features, use_bf16

CALIBRATION_VIEW = 1000  # first view number of the valid copies (training views count from 0)
OFFSETS = np.arange(-2.0, 2.01, 0.25)  # tried for train.tune_offset, in log-probability


@torch.no_grad()
def head_logits(
    model: nn.Module,
    split: Split,
    tp: TrainParams,
    feature_root: Path,
    view: tuple[str, Transform] | None = None,
) -> torch.Tensor:
    """Logits of the trained head on the split's cached frozen features (the backbone runs
    only for images whose features are not cached yet for these weights); of a transformed
    `view` of the images when given."""
    sources = feature_sources(feature_root, model, split.images.shape[-1])
    features = frozen_features(
        sources, split, tp.batch_size, bf16=use_bf16(tp.bf16_features), view=view
    )
    return timm_net(model).get_classifier()(features)


def valid_temperature(
    model: nn.Module, valid: Split, tp: TrainParams, feature_root: Path, seed: int
) -> float:
    """The softmax temperature that minimises the negative log-likelihood of the valid
    pictures and of `train.calibration_views` degraded copies of each.

    On clean valid pictures alone a model that makes almost no errors gets the sharpest
    temperature allowed, and then its rare mistakes on small, dark or blurred faces come
    out confident. The degraded copies (the training degradations, drawn afresh) put such
    faces in the fit, so the temperature reflects what cameras deliver.
    """
    model.eval()
    logits, labels = [head_logits(model, valid, tp, feature_root)], [valid.labels]
    for k in range(tp.calibration_views):
        # View numbers past the training views': other draws than the head trained on
        # (for another split's pictures that changes nothing, but it keeps them apart).
        view = named_degraded_view(CALIBRATION_VIEW + k, seed, tp.degrade)
        logits.append(head_logits(model, valid, tp, feature_root, view))
        labels.append(valid.labels)
    return fit_temperature(torch.cat(logits).numpy(), torch.cat(labels).numpy())


def best_offset(logp: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The offset (of OFFSETS) added to class k's log-probability that gives the best macro
    F1 of the argmax; ties go to the smallest shift, 0 where it is among them."""
    classes = list(range(logp.shape[1]))
    macro = []
    for b in OFFSETS:
        shifted = logp.copy()
        shifted[:, k] += b
        macro.append(
            f1_score(labels, shifted.argmax(1), labels=classes, average="macro", zero_division=0)
        )
    best = max(macro)
    return float(min((b for b, m in zip(OFFSETS, macro, strict=True) if m == best), key=abs))


def tune_offset(
    model: nn.Module,
    valid: Split,
    tp: TrainParams,
    feature_root: Path,
    temperature: float,
    k: int,
) -> float:
    """Fit class k's offset on the valid pictures' calibrated log-probabilities and fold it
    into the head: log p_k + b ranks as the logit z_k + b * T does, so the model itself
    answers with the offset (evaluate, scenes, predict and the ONNX export alike).

    The balanced loss weights that teach a rare class also make the net call it too often:
    this moves the decision back to where valid pictures put it. Returns the offset.
    """
    model.eval()
    logits = head_logits(model, valid, tp, feature_root)
    logp = torch.log_softmax(logits / temperature, dim=1).numpy()
    offset = best_offset(logp, valid.labels.numpy(), k)
    with torch.no_grad():
        head = cast(nn.Linear, timm_net(model).get_classifier())  # the trained linear head
        head.bias[k] += offset * temperature
    return offset
