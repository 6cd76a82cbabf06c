"""Training-time augmentation of uint8 image tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision.transforms import v2


def create_augment(
    size: int,
    rotation: float = 20,
    hflip: bool = True,
    color_jitter: float = 0.2,
    scale: Sequence[float] = (0.85, 1.0),
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-image augmentation on uint8 CHW tensors: rotation, zoom, flip, colour."""
    ops: list[nn.Module] = []
    if rotation:
        # Grey fill, like transparent pixels get (images.BACKGROUND): no black corners
        # for the net to learn as a feature of augmented images.
        ops.append(v2.RandomRotation(rotation, fill=128))
    if scale and min(scale) < 1:
        ops.append(v2.RandomResizedCrop(size, scale=tuple(scale), ratio=(0.9, 1.1)))
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if color_jitter:
        cj = color_jitter
        ops.append(v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=min(cj / 4, 0.5)))
    return v2.Compose(ops)


class TensorImages(torch.utils.data.Dataset):
    """In-memory uint8 images with labels and an optional per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.labels[i]
