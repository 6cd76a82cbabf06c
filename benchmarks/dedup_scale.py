"""Near-duplicate search at scale: the LSH search against comparing all pairs.

Random 256-bit hashes (the pipeline's pHash 16x16) with a planted near copy for one hash in
20, 0 to 40 bits away (params prepare.near_duplicate_distance). Each search runs in a fresh
process so its peak RSS is its own; the growth rate is the slope of log time over log N.
Writes benchmarks/results/dedup_scale.md.

    python benchmarks/dedup_scale.py                       # 10k .. 1M; all pairs to 30k
    python benchmarks/dedup_scale.py --sizes 10000 --exact-up-to 10000
    python benchmarks/dedup_scale.py --smoke               # 2,000 hashes, into a temp folder
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from facemask.data.dedup import lsh_plan, near_pairs, near_pairs_exact

OUT = Path(__file__).parent / "results" / "dedup_scale.md"
DISTANCE = 40


def hashes(n: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Random hashes and the planted pairs (i < j): copies 0..DISTANCE bits from a source."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    rows = rng.permutation(n)
    src, dst = rows[: n // 20], rows[n // 20 : n // 10]
    unpacked = np.unpackbits(bits[src], axis=1)
    for row, k in zip(unpacked, rng.integers(0, DISTANCE + 1, len(src)), strict=True):
        row[rng.choice(256, k, replace=False)] ^= 1
    bits[dst] = np.packbits(unpacked, axis=1)
    return bits, {(min(s, d), max(s, d)) for s, d in zip(src.tolist(), dst.tolist(), strict=True)}


def run(method: str, n: int, queue: mp.Queue) -> None:
    bits, planted = hashes(n)
    search = near_pairs if method == "lsh" else near_pairs_exact
    start = time.perf_counter()
    pairs = search(bits, DISTANCE)
    seconds = time.perf_counter() - start
    found = set(map(tuple, pairs.tolist()))
    queue.put(
        {
            "method": method,
            "hashes": n,
            "seconds": round(seconds, 2),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "pairs_found": len(found),
            "planted_missed": len(planted - found),
        }
    )


def measure(method: str, n: int) -> dict:
    ctx = mp.get_context("spawn")  # a clean process: its peak RSS is this search's
    queue = ctx.Queue()
    proc = ctx.Process(target=run, args=(method, n, queue))
    proc.start()
    row = queue.get()
    proc.join()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sizes = [10_000, 30_000, 100_000, 300_000, 1_000_000]
    ap.add_argument("--sizes", type=int, nargs="+", default=sizes)
    ap.add_argument("--exact-up-to", type=int, default=30_000, help="all pairs only this far")
    ap.add_argument("--out", type=Path, default=OUT, help="the markdown file to write")
    ap.add_argument(
        "--smoke", action="store_true", help="2,000 hashes, both methods, into a temp folder"
    )
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.exact_up_to = [2_000], 2_000
        if args.out == OUT:  # never over the recorded result
            args.out = Path(tempfile.mkdtemp(prefix="dedup_scale_")) / OUT.name
    rows = []
    for n in args.sizes:
        for method in ("lsh", "all pairs") if n <= args.exact_up_to else ("lsh",):
            rows.append(measure(method, n))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    lines = [
        f"Random 256-bit hashes, one in 20 with a planted copy 0..{DISTANCE} bits away; "
        f"max distance {DISTANCE}.",
        "",
        table.to_markdown(index=False),
        "",
    ]
    for method, part in table.groupby("method"):
        if len(part) > 1:
            slope = np.polyfit(np.log(part["hashes"]), np.log(part["seconds"]), 1)[0]
            lines.append(f"{method}: time grows like N^{slope:.2f} over {part['hashes'].tolist()}")
    lsh = table[table["method"] == "lsh"]
    if len(lsh) > 2:  # the slope between neighbouring sizes: does growth steepen with N?
        step = np.diff(np.log(lsh["seconds"])) / np.diff(np.log(lsh["hashes"]))
        lines.append("lsh, between neighbouring sizes: " + ", ".join(f"N^{s:.2f}" for s in step))
    plans = ", ".join(f"{n:,}: {lsh_plan(n, 256, DISTANCE)}" for n in args.sizes)
    # Bit sampling's exponent (Indyk-Motwani): a near pair shares a sampled bit with chance
    # p1, a random pair (128 bits apart on average) with 1/2; tables ~ N ** rho.
    rho = np.log(1 / (1 - DISTANCE / 256)) / np.log(2)
    lines += [
        "",
        f"LSH plan (key bits, tables) per N: {plans}",
        f"Bit-sampling LSH bound at distance {DISTANCE} of 256 bits: work ~ N^(1+rho), "
        f"rho = ln(1/{1 - DISTANCE / 256:.3f}) / ln 2 = {rho:.3f}",
    ]
    missing = [n for n in args.sizes if n > args.exact_up_to]
    if missing:
        # the all-pairs search holds block x N x 32 bytes of XORs per block of 1,024 rows
        lines.append(
            f"All pairs not run at {missing}: one block of 1,024 rows holds "
            + ", ".join(f"{1024 * n * 32 / 2**30:.0f} GiB at {n:,}" for n in missing)
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
