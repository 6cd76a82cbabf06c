"""Batched inference of a classifier on uint8 images."""

from __future__ import annotations

import torch
from torch import nn

from facemask.data.cache import Normalize

TTA_VIEWS = ("flip",)  # test-time views whose logits are averaged with the image's own


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    norm: Normalize,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    tta: tuple[str, ...] | list[str] = (),
) -> torch.Tensor:
    """Logits for uint8 NCHW images, in batches; with `tta` ("flip": the mirrored image too)
    the mean of the logits over the image and its views."""
    unknown = set(tta) - set(TTA_VIEWS)
    if unknown:
        raise ValueError(f"unknown test-time views {sorted(unknown)}; valid: {list(TTA_VIEWS)}")
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size].to(device)
        logits = model(norm(batch)).float()
        if "flip" in tta:  # mirrored before Normalize: uint8 is cheaper to copy
            logits = (logits + model(norm(torch.flip(batch, dims=[3]))).float()) / 2
        out.append(logits.cpu())
    return torch.cat(out) if out else torch.zeros(0, model.num_classes)
