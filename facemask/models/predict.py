"""Batched inference of a classifier on uint8 images."""

from __future__ import annotations

import torch
from torch import nn

from facemask.data.cache import Normalize


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    norm: Normalize,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Logits for uint8 NCHW images, in batches."""
    model.eval()
    out = [
        model(norm(images[i : i + batch_size].to(device))).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, model.num_classes)
