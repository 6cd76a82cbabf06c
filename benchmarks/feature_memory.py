"""Peak RSS of frozen-feature extraction against the batch size (the default model's two
backbones, 224 px, random weights and images: memory, not accuracy). Each batch size runs in
a process of its own, so each peak is its own.

    python benchmarks/feature_memory.py            # batch sizes 64 32 16
"""

from __future__ import annotations

import resource
import subprocess
import sys

import torch


def one(batch: int, n: int = 128, model: str = "mobilenetv2_100+tf_efficientnet_lite0") -> str:
    from facemask.config import tune_malloc

    tune_malloc()
    from facemask.data.cache import Normalize
    from facemask.models.factory import create_model
    from facemask.training.features import compute_features

    m, _ = create_model(model, 2, pretrained=False)
    images = torch.randint(0, 255, (n, 3, 224, 224), dtype=torch.uint8)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    for b in getattr(m, "backbones", [m]):
        cfg = b.pretrained_cfg
        compute_features(b, images, Normalize(cfg["mean"], cfg["std"]), batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return f"| {batch} | {base} MB | {peak} MB |"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(one(int(sys.argv[2])))
        return
    print("| batch | RSS before | peak RSS |\n|---|---|---|")
    for batch in (64, 32, 16):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(batch)], capture_output=True, text=True
        )
        print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
