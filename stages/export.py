"""Stage export: the trained classifier to ONNX and TorchScript for edge devices; a parity
check on the test pictures that fails the stage above export.tolerance; ONNX Runtime latency
and throughput; a dynamically quantised int8 ONNX model and its test accuracy."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.config import exit_on_error, tune_malloc
from facemask.data.cache import decode_frame
from facemask.evaluation.predictions import predict_probs
from facemask.models.factory import load_model
from facemask.params import Params, load_stage_params, stage_params
from facemask.runtime import use_free_cores
from facemask.serving.engines import OnnxEngine
from facemask.serving.export import (
    check_parity,
    export_onnx,
    export_torchscript,
    max_prob_difference,
    onnx_latency,
    quantize_int8,
    torchscript_probs,
)


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return round(float((probs.argmax(1) == labels).mean()), 4)


def _round(x: float) -> float:
    return float(f"{x:.3g}")  # three significant digits: differences span 1e-8 to 1


SECTIONS = ("export",)


def main(
    params: Mapping | Params,
    model_path: Path,
    test_csv: Path,
    onnx_path: Path,
    torchscript_path: Path,
    int8_path: Path | None,
    metrics_json: Path,
) -> dict:
    """Export, check parity, time; write the metrics before failing on parity."""
    params = stage_params(params, SECTIONS)
    tune_malloc()
    use_free_cores()
    ep = params.export
    model, card = load_model(model_path)
    test = pd.read_csv(test_csv)
    images = decode_frame(test, card.image_size)
    labels = test["label"].map(card.classes.index).to_numpy()
    reference = predict_probs(model, card, images, ep.batch_size)
    export_onnx(model, card, onnx_path)
    export_torchscript(model, card, torchscript_path)
    onnx_probs = OnnxEngine(onnx_path, ep.batch_size, ep.threads)(images)
    differences = {
        "onnx": max_prob_difference(reference, onnx_probs),
        "torchscript": max_prob_difference(
            reference, torchscript_probs(torchscript_path, images, ep.batch_size)
        ),
    }
    timing = {"repeats": ep.repeats, "warmup": ep.warmup}
    sample = images[: max(ep.batch_sizes)]
    metrics = {
        "model": card.model,
        "image_size": card.image_size,
        "test_images": len(images),
        "parity": {
            "max_probability_difference": {k: _round(v) for k, v in differences.items()},
            "tolerance": ep.tolerance,
            "passed": all(v <= ep.tolerance for v in differences.values()),
        },
        "accuracy": {
            "pytorch": _accuracy(reference, labels),
            "onnx": _accuracy(onnx_probs, labels),
        },
        "size_mb": {
            "onnx": round(onnx_path.stat().st_size / 2**20, 2),
            "torchscript": round(torchscript_path.stat().st_size / 2**20, 2),
        },
        "onnxruntime": {
            "threads": ep.threads,  # 0: ONNX Runtime's default, one per physical core
            "cpu_count": os.cpu_count(),
            **onnx_latency(onnx_path, sample, ep.batch_sizes, ep.threads, **timing),
        },
    }
    if int8_path is not None:
        quantize_int8(onnx_path, int8_path)
        int8_probs = OnnxEngine(int8_path, ep.batch_size, ep.threads)(images)
        metrics["int8"] = {
            "accuracy": _accuracy(int8_probs, labels),
            "agreement_with_fp32": _accuracy(int8_probs, reference.argmax(1)),
            "max_probability_difference": _round(max_prob_difference(reference, int8_probs)),
            "size_mb": round(int8_path.stat().st_size / 2**20, 2),
            **onnx_latency(int8_path, sample, ep.batch_sizes, ep.threads, **timing),
        }
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: metrics[k] for k in ("parity", "accuracy", "onnxruntime")}))
    check_parity(differences, ep.tolerance)  # after writing: the numbers show what failed
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("test", type=Path, help="test split CSV: parity and accuracy pictures")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--onnx", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--torchscript", type=Path, default=Path("models/model.ts"))
    parser.add_argument("--int8", type=Path, default=None, help="also write an int8 ONNX model")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/export.json"))
    args = parser.parse_args()
    with exit_on_error("export"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.model,
            args.test,
            args.onnx,
            args.torchscript,
            args.int8,
            args.metrics,
        )
