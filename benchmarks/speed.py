"""Images per second of each training phase, and which CPU settings pay.

Each cell runs in its own process so that malloc settings, threads and warm caches
don't leak between cells. Prints a markdown table.

    python benchmarks/speed.py                       # the default grid (~5 min on 2 cores)
    python benchmarks/speed.py --models resnet18 --sizes 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pandas as pd

# phase, layout, dtype, malloc tuning
CELLS = [
    ("inference", "channels_last", "fp32", True),
    ("inference", "contiguous", "fp32", True),
    ("inference", "channels_last", "fp32", False),
    ("inference", "channels_last", "bf16", True),
    ("finetune", "channels_last", "fp32", True),
    ("finetune", "channels_last", "fp32", False),
    ("finetune", "channels_last", "bf16", True),
]


def measure(model_name: str, size: int, phase: str, layout: str, dtype: str, batch: int) -> dict:
    """Run in a child process: images/s of one phase for one setting."""
    import torch

    from facemask.config import tune_malloc
    from facemask.models.factory import create_model

    tuned = tune_malloc()
    model, _ = create_model(model_name, 2, pretrained=False)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch,))
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        if phase == "inference":
            with torch.inference_mode(), amp:
                model.eval()(x)
        else:
            with amp:
                loss = torch.nn.functional.cross_entropy(model.train()(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for _ in range(2):
        step()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < 8 or n < 3:  # ~8 s of steady state per cell
        step()
        n += 1
    return {"images_per_s": n * batch / (time.perf_counter() - t), "malloc_tuned": tuned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_100"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, size, phase, layout, dtype = args.one
        print(json.dumps(measure(name, int(size), phase, layout, dtype, args.batch)))
        return
    rows = []
    for name in args.models:
        for size in args.sizes:
            for phase, layout, dtype, tuned in CELLS:
                env = dict(os.environ)
                if not tuned:
                    # Any GLIBC_TUNABLES makes tune_malloc() stand back; this one is a no-op.
                    env["GLIBC_TUNABLES"] = "glibc.malloc.perturb=0"
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--batch",
                        str(args.batch),
                        "--one",
                        name,
                        str(size),
                        phase,
                        layout,
                        dtype,
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(
                    {
                        "model": name,
                        "px": size,
                        "phase": phase,
                        "layout": layout,
                        "dtype": dtype,
                        "malloc tuned": r["malloc_tuned"],
                        "images/s": round(r["images_per_s"], 1),
                    }
                )
                print(rows[-1], file=sys.stderr)
    print(f"torch threads: {os.cpu_count()} cores, batch {args.batch}\n")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
