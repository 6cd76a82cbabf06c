"""Export a trained classifier for edge devices (ONNX, TorchScript), check it still answers
as PyTorch does, time it under ONNX Runtime, and quantise it to int8.

The exported graph takes what a decoder gives: uint8 NHWC pictures at the card's size,
normalisation included, and returns logits; the card (classes, size, temperature) travels in
the file's metadata, so the file alone is enough to serve.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facemask.models.factory import ModelCard
from facemask.serving.engines import ONNX_INPUT, ONNX_OUTPUT, OnnxEngine, softmax

TORCHSCRIPT_CARD = "facemask.json"  # the card, in the TorchScript archive's extra files


class ParityError(ValueError):
    """An exported model whose answers differ from PyTorch's by more than the tolerance."""


class PixelModel(nn.Module):
    """uint8 NHWC pictures in, logits out: the model with its input normalisation."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, model: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(card.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(card.std).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        return self.model((x - self.mean) / self.std)


def _example(card: ModelCard, n: int = 2) -> torch.Tensor:
    # Batch 2, not 1: an exporter may otherwise fix the batch dimension at 1.
    g = torch.Generator().manual_seed(0)
    shape = (n, card.image_size, card.image_size, 3)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


def export_onnx(model: nn.Module, card: ModelCard, path: str | os.PathLike) -> Path:
    """One self-contained .onnx file (torch.export-based exporter), any batch size."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = PixelModel(model, card).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapped,
            (_example(card),),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    assert program is not None  # the dynamo exporter always returns its program
    proto = program.model_proto
    proto.metadata_props.clear()
    for key, value in card.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return path


def export_torchscript(model: nn.Module, card: ModelCard, path: str | os.PathLike) -> Path:
    """A traced TorchScript archive (loads with torch.jit.load, no facemask code needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = PixelModel(model, card).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        traced = torch.jit.trace(wrapped, (_example(card),))
        extra = {TORCHSCRIPT_CARD: json.dumps(card.__dict__, sort_keys=True)}
        torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def torchscript_probs(path: str | os.PathLike, images: np.ndarray, batch_size: int = 64):
    """Probabilities from a TorchScript export, at the temperature of the card inside it."""
    extra = {TORCHSCRIPT_CARD: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), _extra_files=extra)
    card = ModelCard(**json.loads(extra[TORCHSCRIPT_CARD]))
    with torch.no_grad():
        logits = [
            module(torch.from_numpy(images[i : i + batch_size])).numpy()
            for i in range(0, len(images), batch_size)
        ]
    return softmax(np.concatenate(logits), getattr(card, "temperature", 1.0))


def max_prob_difference(reference: np.ndarray, other: np.ndarray) -> float:
    """Largest absolute difference between two sets of class probabilities."""
    if reference.shape != other.shape:
        raise ParityError(f"output shapes differ: {reference.shape} vs {other.shape}")
    return float(np.abs(reference.astype(np.float64) - other).max(initial=0.0))


def check_parity(differences: dict[str, float], tolerance: float) -> None:
    """Raise ParityError naming every export whose difference is above `tolerance`."""
    bad = {k: v for k, v in differences.items() if not v <= tolerance}  # NaN fails too
    if bad:
        text = ", ".join(f"{k} {v:.2e}" for k, v in bad.items())
        raise ParityError(f"export parity failed: max probability difference {text} > {tolerance}")


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Dynamic int8 quantisation (weights int8, activations quantised on the fly)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Its root-logger warnings (the uint8 input is not a float to quantise; shape inference
    # advice) are noise here: the parity and accuracy figures say how it went.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    # Keep the card: the quantised file must serve on its own as well.
    original, quantised = onnx.load(str(src)), onnx.load(str(dst))
    quantised.metadata_props.clear()
    quantised.metadata_props.extend(original.metadata_props)
    onnx.save_model(quantised, str(dst))
    return Path(dst)


def time_batches(
    run: Callable[[np.ndarray], object],
    images: np.ndarray,
    batch_size: int,
    repeats: int,
    warmup: int,
) -> dict:
    """Median wall time of `run` on one batch (repeated), warm-up runs excluded."""
    reps = -(-batch_size // max(1, len(images)))
    batch = np.ascontiguousarray(np.concatenate([images] * reps)[:batch_size])
    for _ in range(warmup):
        run(batch)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(batch)
        seconds.append(time.perf_counter() - t0)
    median = statistics.median(seconds)
    return {
        "batch_size": batch_size,
        "median_ms": round(median * 1000, 3),
        "images_per_s": round(batch_size / median, 1),
        "repeats": repeats,
        "warmup": warmup,
    }


def onnx_latency(
    path: str | os.PathLike, images: np.ndarray, batch_sizes: list[int], threads: int, **timing
) -> dict:
    """time_batches under ONNX Runtime for each batch size, keyed `batch_<n>`."""
    engine = OnnxEngine(path, batch_size=max(batch_sizes), threads=threads)
    return {f"batch_{b}": time_batches(engine.logits, images, b, **timing) for b in batch_sizes}
