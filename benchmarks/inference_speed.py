"""Frozen-backbone inference speed: eager vs TorchScript (models.predict.fast_forward).

Pooled features of each default backbone at the pipeline's size, batch 16, channels_last,
the threads the machine has free; images/s over ~1000 pictures after a warm-up, and the
largest difference between the traced and the eager features. Writes
benchmarks/results/inference_speed.md (docs/speed.md shows it).

    python benchmarks/inference_speed.py
    python benchmarks/inference_speed.py --size 224 --batch 32 --out /tmp/speed.md
    python benchmarks/inference_speed.py --smoke   # MobileNetV2, random weights, 32 px, temp folder
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from facemask.config import tune_malloc
from facemask.models.factory import create_model
from facemask.models.predict import PooledFeatures, fast_forward
from facemask.runtime import use_free_cores

OUT = Path(__file__).parent / "results" / "inference_speed.md"


def images_per_second(forward, x: torch.Tensor, pictures: int = 1024) -> float:
    with torch.inference_mode():
        forward(x)
        start, done = time.perf_counter(), 0
        while done < pictures:
            forward(x)
            done += len(x)
    return done / (time.perf_counter() - start)


def measure_backbone(
    name: str, x: torch.Tensor, pictures: int, pretrained: bool = True
) -> tuple[float, float, float]:
    """(eager images/s, traced images/s, largest absolute difference of the features)."""
    model, _ = create_model(name, 0, pretrained=pretrained)
    model = model.eval().to(memory_format=torch.channels_last)
    eager = PooledFeatures(model)
    traced = fast_forward(model, x, pooled=True)
    with torch.inference_mode():
        diff = (eager(x) - traced(x)).abs().max().item()
    return images_per_second(eager, x, pictures), images_per_second(traced, x, pictures), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenetv2_100,tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--pictures", type=int, default=1024, help="timed pictures per path")
    parser.add_argument("--out", type=Path, default=OUT, help="the markdown file to write")
    parser.add_argument(
        "--smoke", action="store_true", help="one backbone, random weights, tiny, temp folder"
    )
    args = parser.parse_args()
    pretrained = not args.smoke
    if args.smoke:
        args.models, args.size, args.batch, args.pictures = "mobilenetv2_100", 32, 2, 8
        if args.out == OUT:  # never over the recorded result
            args.out = Path(tempfile.mkdtemp(prefix="inference_speed_")) / OUT.name
    tune_malloc()
    threads = use_free_cores()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=OUT.parent
    ).stdout.strip()
    lines = [
        f"`python benchmarks/inference_speed.py` at {commit or 'an unknown commit'}: "
        f"{threads} threads, {args.size} px, batch {args.batch}"
        + (", random weights (--smoke)" if args.smoke else ""),
        "",
        "| backbone | eager img/s | traced img/s | speed-up | max abs diff |",
        "|---|---|---|---|---|",
    ]
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(
        memory_format=torch.channels_last
    )
    for name in args.models.split(","):
        e, t, diff = measure_backbone(name, x, args.pictures, pretrained)
        lines.append(f"| {name} | {e:.0f} | {t:.0f} | {t / e:.2f}x | {diff:.1e} |")
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
