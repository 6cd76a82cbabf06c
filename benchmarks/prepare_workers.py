"""Prepare's per-file work (decode, checks, hashes) in pictures per second: this process, the
local process pool, and a Dask cluster of 1 and 2 worker processes started on loopback.

Runs on the pictures of data/index.csv (from `dvc repro`: face crops and photos), after one
untimed pass that warms the page cache; every run's results are compared with the
one-process run. Writes benchmarks/results/prepare_workers.md.

    python benchmarks/prepare_workers.py [--pictures 2000]   # default: every picture
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd

from facemask.data.prepare import inspect_files

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "prepare_workers.md"


def timed(paths: list[Path], workers: int | str) -> tuple[float, list]:
    start = time.perf_counter()
    found = inspect_files(paths, min_side=20, max_pixels=89478485, hash_size=16, workers=workers)
    return time.perf_counter() - start, found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pictures", type=int, default=0, help="0 = all of data/index.csv")
    args = ap.parse_args()
    from distributed import LocalCluster

    paths = [
        ROOT / p for p in pd.read_csv(ROOT / "data/index.csv")["path"][: args.pictures or None]
    ]
    timed(paths, 1)  # warm the page cache: every runner then reads from memory alike
    rows, reference = [], None
    runs = [("this process", 1), ("process pool, 2", 2), ("dask, 1 worker", -1)]
    for name, workers in [*runs, ("dask, 2 workers", -2)]:  # negative: Dask workers
        if workers < 0:
            with LocalCluster(n_workers=-workers, threads_per_worker=1, host="127.0.0.1",
                              dashboard_address=None) as cluster:  # fmt: skip
                seconds, found = timed(paths, cluster.scheduler_address)
        else:
            seconds, found = timed(paths, workers)
        reference = reference or found
        same = [f.row for f in found] == [f.row for f in reference]
        rate = round(len(paths) / seconds, 1)
        rows.append({"runner": name, "pictures": len(paths), "seconds": round(seconds, 1),
                     "pictures_per_s": rate, "same_rows": same})  # fmt: skip
        print(rows[-1], flush=True)
    text = (
        f"{len(paths)} pictures of data/index.csv on {os.cpu_count()} CPU cores; Dask workers are "
        "processes on this machine (a LocalCluster on loopback)\n\n"
        + pd.DataFrame(rows).to_markdown(index=False)
        + "\n"
    )
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
