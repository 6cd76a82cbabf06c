"""Frozen-backbone inference speed: eager vs TorchScript (models.predict.fast_forward).

Pooled features of each default backbone at the pipeline's size, batch 16, channels_last,
the threads the machine has free; images/s over ~1000 pictures after a warm-up, and the
largest difference between the traced and the eager features.

    python benchmarks/inference_speed.py
    python benchmarks/inference_speed.py --size 224 --batch 32
"""

from __future__ import annotations

import argparse
import time

import torch

from facemask.config import tune_malloc
from facemask.models.factory import create_model
from facemask.models.predict import PooledFeatures, fast_forward
from facemask.runtime import use_free_cores


def images_per_second(forward, x: torch.Tensor, pictures: int = 1024) -> float:
    with torch.inference_mode():
        forward(x)
        start, done = time.perf_counter(), 0
        while done < pictures:
            forward(x)
            done += len(x)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenetv2_100,tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    tune_malloc()
    threads = use_free_cores()
    print(f"{threads} threads, {args.size} px, batch {args.batch}\n")
    print("| backbone | eager img/s | traced img/s | speed-up | max abs diff |")
    print("|---|---|---|---|---|")
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(
        memory_format=torch.channels_last
    )
    for name in args.models.split(","):
        model, _ = create_model(name, 0)
        model = model.eval().to(memory_format=torch.channels_last)
        eager = PooledFeatures(model)
        traced = fast_forward(model, x, pooled=True)
        with torch.inference_mode():
            diff = (eager(x) - traced(x)).abs().max().item()
        e, t = images_per_second(eager, x), images_per_second(traced, x)
        print(f"| {name} | {e:.0f} | {t:.0f} | {t / e:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
