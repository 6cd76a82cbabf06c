"""Inference engines for serving: the PyTorch model or its ONNX export, one interface."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from facemask.models.factory import ModelCard, timm_net

ONNX_INPUT = "images"  # uint8 NHWC, the card's size
ONNX_OUTPUT = "logits"


class ModelLoadError(ValueError):
    """A model file that is missing or unusable; the message names the file and the reason."""


class Engine(Protocol):
    """Probabilities (N, classes) for uint8 NHWC face crops at `card.image_size`."""

    card: ModelCard

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


class TorchEngine:
    def __init__(self, path: str | os.PathLike, batch_size: int = 64) -> None:
        from facemask.models.factory import load_model

        self.model, self.card = load_model(path)
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from facemask.evaluation.predictions import predict_probs

        return predict_probs(self.model, self.card, images, self.batch_size)

    def embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and the pooled features the head reads, from one forward pass."""
        import torch

        from facemask.data.cache import Normalize, to_tensor
        from facemask.models.predict import fast_forward
        from facemask.runtime import refresh_threads

        norm, head = Normalize(self.card.mean, self.card.std), timm_net(self.model).get_classifier()
        pixels, probs, feats = to_tensor(images), [], []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                refresh_threads()
                x = norm(pixels[i : i + self.batch_size])
                f = fast_forward(self.model, x, pooled=True)(x).float()
                probs.append((head(f) / self.card.temperature).softmax(1))
                feats.append(f)
        return torch.cat(probs).numpy(), torch.cat(feats).numpy()


class OnnxEngine:
    """An exported model (facemask.serving.export) under ONNX Runtime on the CPU."""

    def __init__(self, path: str | os.PathLike, batch_size: int = 64, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = ModelCard.from_metadata(meta)
        self.batch_size = batch_size

    def logits(self, images: np.ndarray) -> np.ndarray:
        parts = [
            self.session.run([ONNX_OUTPUT], {ONNX_INPUT: images[i : i + self.batch_size]})[0]
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.card.classes)))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        return softmax(self.logits(images), getattr(self.card, "temperature", 1.0))


def load_engine(path: str | os.PathLike, engine: str = "torch", **kwargs) -> Engine:
    """The model at `path` under `engine` (torch: .safetensors; onnx: an exported .onnx).

    Any failure (missing, truncated, not a facemask model, wrong architecture) becomes a
    ModelLoadError with one line naming the file: callers print it, not a traceback.
    """
    path = Path(path)
    if engine not in ("torch", "onnx"):
        raise ModelLoadError(f"unknown engine {engine!r}; known: torch, onnx")
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file")
    try:
        return TorchEngine(path, **kwargs) if engine == "torch" else OnnxEngine(path, **kwargs)
    # Broad on purpose: safetensors, torch and onnxruntime each raise their own error types
    # for a truncated or foreign file, and every one of them means "not a usable model".
    except Exception as err:
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise ModelLoadError(f"{path}: not a usable {engine} model: {reason}") from err
