"""Temperature scaling: one scalar fitted on the valid split so confidences mean what they say."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facemask.data.cache import Split
from facemask.evaluation.calibration import fit_temperature
from facemask.params import TrainParams
from facemask.training.augment import Transform, named_degraded_view
from facemask.training.features import feature_sources, frozen_features, use_bf16

CALIBRATION_VIEW = 1000  # first view number of the valid copies (training views count from 0)


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
    return model.get_classifier()(features)


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
