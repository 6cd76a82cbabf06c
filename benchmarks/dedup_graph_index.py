"""Near-duplicate search by a graph index (binary HNSW) on the dedup benchmark's hashes.

The same random 256-bit hashes with planted copies 0..40 bits away as dedup_scale.py; each
hash asks a binary HNSW index (usearch, faiss) for its nearest other hash, and a planted pair
counts as found when either side gets the other. Not a dependency of the project:

    pip install usearch faiss-cpu
    python benchmarks/dedup_graph_index.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.dedup_scale import DISTANCE, hashes

OUT = Path(__file__).parent / "results" / "dedup_graph_index.md"


def nearest_usearch(bits: np.ndarray, expansion: int) -> np.ndarray:
    from usearch.index import Index

    index = Index(ndim=256, metric="hamming", dtype="b1", expansion_add=expansion,
                  expansion_search=expansion)  # fmt: skip
    index.add(np.arange(len(bits)), bits)
    return index.search(bits, 2).keys


def nearest_faiss(bits: np.ndarray, expansion: int) -> np.ndarray:
    import faiss

    index = faiss.IndexBinaryHNSW(256, 16)
    index.hnsw.efConstruction = expansion
    index.hnsw.efSearch = expansion
    index.add(bits)
    return index.search(bits, 2)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--expansion", type=int, nargs="+", default=[64, 256])
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        bits, planted = hashes(n)
        for name, search in (("usearch", nearest_usearch), ("faiss", nearest_faiss)):
            for ef in args.expansion:
                start = time.perf_counter()
                keys = search(bits, ef)
                seconds = time.perf_counter() - start
                got = {(i, int(k)) for i, row in enumerate(keys) for k in row if k != i and k >= 0}
                found = sum((a, b) in got or (b, a) in got for a, b in planted)
                rows.append({"index": name, "expansion": ef, "hashes": n,
                             "seconds": round(seconds, 2),
                             "planted_found": f"{found / len(planted):.1%}"})  # fmt: skip
                print(rows[-1], flush=True)
    lines = [
        f"Random 256-bit hashes, one in 20 with a planted copy 0..{DISTANCE} bits away; each "
        "hash's nearest other hash from a binary HNSW index (M 16, expansion = ef at build and "
        "search). LSH (dedup_scale.md) finds 100 %; one thread.",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
