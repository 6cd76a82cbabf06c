"""Training-time augmentation of uint8 image tensors."""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageFilter
from torch import nn
from torchvision.transforms import v2

from facemask.config import code_fingerprint


class RandomDegrade(nn.Module):
    """`degrade` on a uint8 CHW tensor with probability `p`, drawn from torch's generator
    (so DataLoader workers and resumed runs seed it as they seed every other transform)."""

    def __init__(self, p: float, cfg: dict | None = None) -> None:
        super().__init__()
        self.p, self.cfg = p, cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return x
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        return torch.from_numpy(degrade(x.permute(1, 2, 0).numpy(), rng, self.cfg)).permute(2, 0, 1)


def create_augment(
    size: int,
    rotation: float = 20,
    hflip: bool = True,
    color_jitter: float = 0.2,
    scale: Sequence[float] = (0.85, 1.0),
    degrade: float = 0.0,
    degrade_cfg: dict | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-image augmentation on uint8 CHW tensors: rotation, zoom, flip, colour, and with
    probability `degrade` one random degradation (`degrade`, settings `degrade_cfg`) last,
    as a camera would apply it to the scene."""
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
    if degrade:
        ops.append(RandomDegrade(degrade, degrade_cfg))
    return v2.Compose(ops) if ops else nn.Identity()


class TensorImages(torch.utils.data.Dataset):
    """In-memory uint8 images with labels and an optional per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.labels[i]


# What a camera at an entrance or a crowd photo does to a face, drawn at random per picture.
# Ranges differ from the robustness stage's fixed severities on purpose: training on the very
# conditions the robustness curve measures would flatter it.
DEGRADE_DEFAULTS: dict = {
    "downscale": [12, 72],  # short side in px, drawn log-uniform, then back up to the input size
    "p_downscale": 0.7,
    "jpeg": [15, 70],  # quality
    "p_jpeg": 0.5,
    "blur": [0.3, 1.6],  # Gaussian sigma, px at the input size
    "p_blur": 0.25,
    "noise": [2, 14],  # Gaussian sigma, 0-255 units
    "p_noise": 0.3,
    "gamma": [0.6, 2.6],  # > 1 darkens: low light, backlight
    "p_gamma": 0.5,
    "contrast": [0.45, 1.0],
    "p_contrast": 0.3,
    "desaturate": [0.0, 1.0],  # 1 = grey: dark or grey masks look like any other
    "p_desaturate": 0.3,
    "hflip": 0.5,
}
_RESAMPLE = (
    Image.Resampling.NEAREST,
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.BOX,
)  # what cameras and browsers use


def degrade(image: np.ndarray, rng: np.random.Generator, cfg: dict | None = None) -> np.ndarray:
    """One random degradation of a uint8 HWC image: low resolution, compression, blur,
    noise, low light, low contrast, washed-out colour, mirror; same shape out."""
    c = {**DEGRADE_DEFAULTS, **(cfg or {})}
    h, w = image.shape[:2]
    im = Image.fromarray(image)
    if rng.random() < c["p_downscale"]:
        lo, hi = np.log(c["downscale"][0]), np.log(c["downscale"][1])
        side = float(np.exp(rng.uniform(lo, hi)))
        if side < min(h, w):
            small = (max(1, round(w * side / min(h, w))), max(1, round(h * side / min(h, w))))
            down, up = (_RESAMPLE[i] for i in rng.integers(0, len(_RESAMPLE), 2))
            im = im.resize(small, down).resize((w, h), up)
    if rng.random() < c["p_blur"]:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(*c["blur"])))
    # float32 from here; float64 once noise (drawn in float64) is added.
    x: npt.NDArray[np.floating[Any]] = np.asarray(im, dtype=np.float32)
    if rng.random() < c["p_desaturate"]:
        grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        t = rng.uniform(*c["desaturate"])
        x = x * (1 - t) + grey[..., None] * t
    if rng.random() < c["p_contrast"]:
        x = x.mean() + (x - x.mean()) * rng.uniform(*c["contrast"])
    if rng.random() < c["p_gamma"]:
        x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(*c["gamma"])
    if rng.random() < c["p_noise"]:
        x = x + rng.normal(0, rng.uniform(*c["noise"]), x.shape)
    im = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    if rng.random() < c["p_jpeg"]:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(rng.integers(c["jpeg"][0], c["jpeg"][1] + 1)))
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out = np.array(im)  # a writable copy: torch.from_numpy warns on PIL's read-only view
    return out[:, ::-1].copy() if rng.random() < c["hflip"] else out


# A change to uint8 NCHW images that depends only on each image and its content key.
Transform = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]


def degraded_view(view: int, seed: int, cfg: dict | None = None) -> Transform:
    """The `view`-th degraded copy of uint8 NCHW images, a pure function of (seed, view,
    content key): cached features of a view stay valid across runs and batch orders."""

    def apply(images: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
        out = torch.empty_like(images)
        for i, (img, key) in enumerate(zip(images, keys, strict=True)):
            rng = np.random.default_rng([seed, view, zlib.crc32(key.encode())])
            hwc = img.permute(1, 2, 0).numpy()
            out[i] = torch.from_numpy(degrade(hwc, rng, cfg)).permute(2, 0, 1)
        return out

    return apply


def named_degraded_view(view: int, seed: int, cfg: dict | None = None) -> tuple[str, Transform]:
    """(cache name, transform) of the `view`-th degraded copy: the name changes with the seed,
    the view, every degradation setting and this module's code, so a cached view is never
    served for others."""
    key = [seed, view, cfg or {}, code_fingerprint(__name__)]
    tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    return f"degraded-{tag.hexdigest()[:10]}", degraded_view(view, seed, cfg)
