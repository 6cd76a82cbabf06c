"""Decoded-image and feature caches, tensors and augmentation."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from facemask.config import cache_dir
from facemask.images import load_array


class ArrayStore:
    """NumPy arrays on disk under content-derived keys (one .npy file each).

    Writes go to a unique temporary name and are renamed into place, so parallel
    runs (queued experiments) can share a store and never read half a file.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        try:
            return np.load(self.path(key))
        except (FileNotFoundError, ValueError, EOFError):
            return None  # missing or unreadable: recompute

    def put(self, key: str, arr: np.ndarray) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{uuid.uuid4().hex}.npy")
        np.save(tmp, arr)
        tmp.replace(path)


def load_images(
    paths: Sequence[str],
    keys: Sequence[str],
    size: int,
    store: ArrayStore | None = None,
    workers: int = 0,
) -> np.ndarray:
    """Decode and squash-resize images to (N, size, size, 3) uint8, once per content.

    `keys` are content hashes: an image decoded for one experiment is reused by every
    other one at the same size.
    """
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    missing = []
    for i, key in enumerate(keys):
        arr = store.get(f"{key}-{size}") if store else None
        if arr is None:
            missing.append(i)
        else:
            out[i] = arr
    if missing:
        work = partial(load_array, size=size)
        todo = [paths[i] for i in missing]
        workers = workers or os.cpu_count() or 1
        if workers > 1 and len(todo) >= 64:
            with Pool(workers) as pool:
                arrays = pool.imap(work, todo, chunksize=16)
                arrays = list(tqdm(arrays, total=len(todo), desc=f"decode @{size}", unit="img"))
        else:
            arrays = [work(p) for p in tqdm(todo, desc=f"decode @{size}", unit="img")]
        for i, arr in zip(missing, arrays, strict=True):
            out[i] = arr
            if store:
                store.put(f"{keys[i]}-{size}", arr)
    return out


def decode_frame(df: pd.DataFrame, size: int) -> np.ndarray:
    """Pixels (N, size, size, 3 uint8) of a frame's pictures (`path`, `sha256` columns), from
    the decode cache every stage shares."""
    store = ArrayStore(cache_dir() / "images")
    return load_images(df["path"].tolist(), df["sha256"].tolist(), size, store)


def load_split(
    csv: Path, classes: list[str], size: int
) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
    """A split's rows, its images (uint8 NCHW, from the decode cache) and label indices."""
    df = pd.read_csv(csv)
    unknown = set(df["label"]) - set(classes)
    if unknown:
        raise ValueError(f"{csv}: labels {sorted(unknown)} are not in classes {classes}")
    labels = torch.tensor([classes.index(c) for c in df["label"]])
    return df, to_tensor(decode_frame(df, size)), labels


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> uint8 NCHW tensor (a view, no copy)."""
    t = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    return t.permute(0, 3, 1, 2)


class Normalize(nn.Module):
    """uint8 NCHW in, normalised float channels_last out: done once per batch, in place."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().sub_(self.mean).div_(self.std)
        # channels_last is ~1.3-2x faster for CNNs on CPU (oneDNN's native layout).
        return x.contiguous(memory_format=torch.channels_last)


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


def bf16_supported() -> bool:
    """Does this machine run bfloat16 natively (CUDA, or a CPU with AVX512-BF16/AMX)?"""
    if torch.cuda.is_available():
        return True
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@torch.inference_mode()
def compute_features(
    model: nn.Module,
    images: torch.Tensor,
    norm: Normalize,
    batch_size: int = 64,
    flip: bool = False,
    desc: str = "features",
    bf16: bool = False,
) -> torch.Tensor:
    """Pooled backbone features (pre-logits) of uint8 NCHW images, float32 out.

    `bf16` runs the backbone under bfloat16 autocast: 1.5x faster here (AVX512-BF16),
    with the same 5-fold CV accuracy for a head trained on them (benchmarks/).
    """
    model.eval()
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        x = images[i : i + batch_size]
        # Flip the uint8 batch, before Normalize: flipping after it would turn the
        # channels_last tensor back to NCHW and the convolutions ~1.5x slower.
        x = norm(torch.flip(x, dims=[3]) if flip else x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).float())
    return torch.cat(out) if out else torch.zeros(0, model.num_features)


def cached_features(
    model: nn.Module,
    images: torch.Tensor,
    keys: Sequence[str],
    norm: Normalize,
    store: ArrayStore,
    batch_size: int = 64,
    flip: bool = False,
    bf16: bool = False,
) -> torch.Tensor:
    """compute_features, computed only for keys not already in `store`.

    The store must be specific to one backbone (weights), image size and
    normalisation: see `feature_store_key`.
    """
    view = ("flip" if flip else "orig") + ("-bf16" if bf16 else "")
    found = [store.get(f"{k}-{view}") for k in keys]
    missing = [i for i, f in enumerate(found) if f is None]
    if missing:
        new = compute_features(
            model, images[missing], norm, batch_size, flip, f"features/{view}", bf16
        )
        for i, f in zip(missing, new.numpy(), strict=True):
            found[i] = f
            store.put(f"{keys[i]}-{view}", f)
    return torch.from_numpy(np.stack(found)) if found else torch.zeros(0, model.num_features)
