"""Batched inference of a classifier on uint8 images."""

from __future__ import annotations

import itertools
import os
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn

from facemask.data.cache import Normalize
from facemask.models.factory import timm_net
from facemask.runtime import refresh_threads

TTA_VIEWS = ("flip",)  # test-time views whose logits are averaged with the image's own
EAGER_ENV = "FACEMASK_EAGER"  # 1: skip TorchScript (debugging, or a module it mis-traces)

Forward = Callable[[torch.Tensor], torch.Tensor]
# model -> {pooled: (what the trace was made for, the trace)}. Weak: traces go with models.
_TRACES: weakref.WeakKeyDictionary[nn.Module, dict[bool, tuple[tuple, Forward]]] = (
    weakref.WeakKeyDictionary()
)


class PooledFeatures(nn.Module):
    """A timm model's pooled pre-logits features as its forward (what the head reads)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = timm_net(self.model)
        return net.forward_head(net.forward_features(x), pre_logits=True)


def fast_forward(model: nn.Module, example: torch.Tensor, pooled: bool = False) -> Forward:
    """`model` (its pooled features with `pooled`) for inference on batches like `example`.

    On the CPU, in float32: traced, frozen and optimised by TorchScript (BatchNorm folded
    into the convolutions, oneDNN kernels): MobileNetV2 1.8x and EfficientNet-Lite0 1.2x
    faster than eager here at 128 px, outputs within 2e-5 (benchmarks/inference_speed.py).
    The trace is kept with the model and made again when its weights change in place
    (parameter version counters) or the input's shape, dtype or layout changes. Eager
    elsewhere: on a GPU, under autocast, with FACEMASK_EAGER=1, or when tracing fails.
    """
    module = PooledFeatures(model) if pooled else model
    if (
        example.device.type != "cpu"
        or example.dtype != torch.float32
        or torch.is_autocast_enabled("cpu")
        or os.environ.get(EAGER_ENV, "") not in ("", "0")
    ):
        return module
    key = (
        tuple(example.shape[1:]),
        example.is_contiguous(memory_format=torch.channels_last),
        # In-place updates (optimiser steps, BatchNorm statistics, load_state_dict) bump these.
        tuple(t._version for t in itertools.chain(model.parameters(), model.buffers())),
    )
    traces = _TRACES.setdefault(model, {})
    if pooled in traces and traces[pooled][0] == key:
        return traces[pooled][1]
    was_training = model.training
    fast: Forward  # the optimised trace, or the eager module
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notices
            traced = torch.jit.trace(module.eval(), example[:2], check_trace=False)
            fast = torch.jit.optimize_for_inference(traced)  # freezes: weights become constants
            # A trace records Python ints as constants: a forward that uses len(x) would
            # answer every batch with the traced batch's row count. Check another size.
            with torch.no_grad():
                want, got = module(example[:1]), fast(example[:1])
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-3):
                raise ValueError("the trace does not answer like the model on another batch")
    except Exception as err:  # eager gives the same answers, only slower
        print(f"note: eager inference for {type(model).__name__} ({type(err).__name__}: {err})")
        fast = module
    finally:
        model.train(was_training)
    traces[pooled] = (key, fast)
    return fast


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
    forward = None
    for i in range(0, len(images), batch_size):
        refresh_threads()
        batch = images[i : i + batch_size].to(device)
        x = norm(batch)
        if forward is None:
            forward = fast_forward(model, x)
        logits = forward(x).float()
        if "flip" in tta:  # mirrored before Normalize: uint8 is cheaper to copy
            logits = (logits + forward(norm(torch.flip(batch, dims=[3]))).float()) / 2
        out.append(logits.cpu())
    return torch.cat(out) if out else torch.zeros(0, timm_net(model).num_classes)
