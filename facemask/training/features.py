"""Frozen-backbone features: computed once per (backbone weights, size, normalisation, image,
code) and cached on disk, so the head phase and every later run reuse them."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from facemask.config import code_fingerprint
from facemask.data.cache import ArrayStore, Normalize, Split
from facemask.models.factory import backbone_fingerprint, timm_net
from facemask.models.predict import fast_forward
from facemask.runtime import refresh_threads
from facemask.training.distributed import (
    any_across,
    gather_rows,
    is_local_main,
    shard_range,
    world_size,
)

# A change to uint8 NCHW images that depends only on each image and its content key.
Transform = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]


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
    transform: Transform | None = None,
    keys: Sequence[str] | None = None,
    index: Sequence[int] | None = None,
) -> torch.Tensor:
    """Pooled backbone features (pre-logits) of uint8 NCHW images, float32 on the CPU out.

    `index` picks the rows to compute (all by default), a batch at a time, so that no copy
    of the selected images is held. `transform(batch, keys)` changes each uint8 batch first
    (a degraded view), batch by batch so that no transformed copy of the whole set is held;
    `keys` are those of the selected rows.

    Runs where the model's weights are; on the CPU in float32 as a TorchScript trace
    (models.predict.fast_forward). `bf16` runs the backbone under bfloat16 autocast, for
    CPUs with AVX512-BF16/AMX and GPUs: same 5-fold CV accuracy for a head trained on them.
    """
    model.eval()
    device = next(model.parameters()).device
    norm = copy.deepcopy(norm).to(device)  # the caller's stays where it was
    out = []
    forward = None
    count = len(images) if index is None else len(index)
    for i in tqdm(range(0, count, batch_size), desc=desc, unit="batch"):
        refresh_threads()
        x = images[i : i + batch_size] if index is None else images[index[i : i + batch_size]]
        if transform is not None:
            if keys is None:
                raise ValueError("compute_features: a transform needs the images' keys")
            x = transform(x, keys[i : i + batch_size])
        x = x.to(device)
        # Flip the uint8 batch, before Normalize: flipping after it would turn the
        # channels_last tensor back to NCHW and the convolutions ~1.5x slower.
        x = norm(torch.flip(x, dims=[3]) if flip else x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            if forward is None:
                forward = fast_forward(model, x, pooled=True)
            feats = forward(x)
        out.append(feats.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, timm_net(model).num_features)


def cached_features(
    model: nn.Module,
    images: torch.Tensor,
    keys: Sequence[str],
    norm: Normalize,
    store: ArrayStore,
    batch_size: int = 64,
    flip: bool = False,
    bf16: bool = False,
    view: tuple[str, Transform | None] | None = None,
) -> torch.Tensor:
    """compute_features, computed only for keys not already in `store`.

    `view` (name, transform) stores a transformed view under its own name; the transform
    must be a pure function of the image and its key, like `augment.degraded_view`.

    The store must be specific to one backbone (weights), image size and
    normalisation: see `feature_store`. Under several processes each computes a share of
    the missing rows and every process gets them all; the first process on each machine
    fills that machine's store.
    """
    name = view[0] if view else ("flip" if flip else "orig")
    transform = view[1] if view else None  # None with a name: images already transformed
    tag = name + ("-bf16" if bf16 else "")
    found = [store.get(f"{k}-{tag}") for k in keys]
    is_missing = torch.tensor([f is None for f in found], dtype=torch.bool)
    if world_size() > 1:
        # Machines have their own stores: compute what any of them lacks, so that
        # every process takes part in the same collectives.
        is_missing = any_across(is_missing)
    missing = is_missing.nonzero().flatten().tolist()
    if missing:
        share = [missing[j] for j in shard_range(len(missing))]
        new = compute_features(
            model,
            images,
            norm,
            batch_size,
            flip,
            f"features/{tag}",
            bf16,
            transform,
            [keys[j] for j in share],
            share,
        )
        new = gather_rows(new, len(missing))
        write = is_local_main()
        for i, f in zip(missing, new.numpy(), strict=True):
            found[i] = f
            if write:
                store.put(f"{keys[i]}-{tag}", f)
    rows = cast(list[np.ndarray], found)  # every row: found in the store or computed above
    return (
        torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, timm_net(model).num_features)
    )


def feature_store(root: Path, name: str, model: nn.Module, size: int) -> ArrayStore:
    """Where a frozen backbone's features live: keyed by its weights, size, normalisation and
    the code that computes them (this module, the image decoder, the model factory...)."""
    cfg = timm_net(model).pretrained_cfg
    norm_key = hashlib.sha256(repr((tuple(cfg["mean"]), tuple(cfg["std"]))).encode()).hexdigest()
    code = code_fingerprint(__name__)
    parts = [name, backbone_fingerprint(model), str(size), norm_key[:8], code]
    return ArrayStore(root / "-".join(parts))


def use_bf16(mode: str | bool) -> bool:
    """params.yaml `train.bf16_features`: auto = where the CPU/GPU runs bfloat16 natively."""
    return bf16_supported() if mode == "auto" else bool(mode)


@dataclass
class FeatureSource:
    """A frozen module whose pooled features feed the head, its input normalisation and cache."""

    module: nn.Module
    norm: Normalize
    store: ArrayStore


def feature_sources(root: Path, model: nn.Module, size: int) -> list[FeatureSource]:
    """The model itself; for joined backbones (a+b), each backbone on its own.

    Each backbone's features are cached under that backbone's own key, so a joined model
    reuses what its backbones computed alone and the other way round.
    """
    branches = getattr(model, "backbones", None)
    parts = list(branches) if isinstance(branches, nn.ModuleList) else [model]
    sources = []
    for m in parts:
        cfg = timm_net(m).pretrained_cfg
        norm = Normalize(cfg["mean"], cfg["std"])
        sources.append(FeatureSource(m, norm, feature_store(root, cfg["architecture"], m, size)))
    return sources


def frozen_features(
    sources: list[FeatureSource],
    split: Split,
    batch_size: int,
    flip: bool = False,
    bf16: bool = False,
    view: tuple[str, Transform] | None = None,
) -> torch.Tensor:
    """Pooled frozen features of every source side by side, from the caches where they are."""
    if view is not None and len(sources) > 1:
        return _shared_view_features(sources, split, batch_size, flip, bf16, view)
    return torch.cat(
        [
            cached_features(
                s.module, split.images, split.keys, s.norm, s.store, batch_size, flip, bf16, view
            )
            for s in sources
        ],
        1,
    )


VIEW_CHUNK = 256  # pictures transformed at a time: ~40 MB of uint8 at 224 px


def _shared_view_features(
    sources: list[FeatureSource],
    split: Split,
    batch_size: int,
    flip: bool,
    bf16: bool,
    view: tuple[str, Transform],
) -> torch.Tensor:
    """frozen_features of a transformed view, the transform run once per picture for all
    backbones (it is per-image Python and costs about as much as a backbone pass), a chunk
    at a time, and only for chunks some backbone has not cached."""
    name, transform = view
    done = (name, None)  # the chunk is transformed already: the view's name keys the cache
    tag = name + ("-bf16" if bf16 else "")
    parts = []
    for start in range(0, len(split.keys), VIEW_CHUNK):
        keys = split.keys[start : start + VIEW_CHUNK]
        images = split.images[start : start + VIEW_CHUNK]
        found = [[s.store.get(f"{k}-{tag}") for k in keys] for s in sources]
        lacking = torch.tensor([any(f[i] is None for f in found) for i in range(len(keys))])
        if world_size() > 1:  # every process must transform what any of them will compute
            lacking = any_across(lacking)
        if not lacking.any():  # all cached (every warm run): use what was just read
            rows = cast(list[list[np.ndarray]], found)  # none lacking: all found
            parts.append(torch.cat([torch.from_numpy(np.stack(f)) for f in rows], 1))
            continue
        images = transform(images, keys)
        parts.append(
            torch.cat(
                [
                    cached_features(
                        s.module, images, keys, s.norm, s.store, batch_size, flip, bf16, done
                    )
                    for s in sources
                ],
                1,
            )
        )
    width = sum(timm_net(s.module).num_features for s in sources)
    return torch.cat(parts) if parts else torch.zeros(0, width)
