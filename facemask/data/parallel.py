"""Per-file work of prepare (decode, checks, hashes, crops) on local processes or a cluster.

`workers` is a process count (0 = one per core, 1 = this process) or the address of a running
Dask distributed scheduler (params prepare.cluster, e.g. tcp://10.0.0.5:8786). Its workers
need this project's code and environment and the same paths (a shared disk mounted where it
is here); relative paths are read from this process's working folder. Results come back in
input order either way, so the index is the same wherever the work ran.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from multiprocessing import Pool
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")
Workers = int | str  # processes here, or a Dask scheduler address
CONNECT_TIMEOUT = "30s"  # how long to look for the scheduler before giving up


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: Workers,
    desc: str,
    unit: str,
    chunksize: int = 16,
    min_items: int = 64,
) -> list[R]:
    """`[fn(x) for x in items]` on `workers`, with a progress bar; in this process when
    there are fewer than `min_items` (starting a pool costs more than it saves)."""
    if isinstance(workers, str) and workers:
        return _on_cluster(fn, items, workers, desc, unit, chunksize)
    n = int(workers) or os.cpu_count() or 1
    if n == 1 or len(items) < min_items:
        return [fn(x) for x in tqdm(items, desc=desc, unit=unit)]
    with Pool(n) as pool:
        return list(tqdm(pool.imap(fn, items, chunksize), total=len(items), desc=desc, unit=unit))


def _on_cluster(
    fn: Callable[[T], R], items: Sequence[T], address: str, desc: str, unit: str, chunksize: int
) -> list[R]:
    """parallel_map on the Dask scheduler at `address`, a task per `chunksize` items."""
    try:
        from dask.utils import parse_timedelta
        from distributed import Client, as_completed
    except ImportError as err:  # the optional extra `cluster`
        raise RuntimeError(
            f"prepare.cluster is {address!r} but dask.distributed is not installed: "
            "pip install -e '.[cluster]'"
        ) from err
    # One task per chunk of files: per-task overhead is ~1 ms, a file ~10 ms.
    chunks = [list(items[i : i + chunksize]) for i in range(0, len(items), chunksize)]
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except OSError as err:
        raise RuntimeError(f"prepare.cluster: no Dask scheduler at {address!r} ({err})") from err
    with client:
        try:  # a scheduler without workers would leave the tasks waiting for ever
            # the same seconds it would parse from the string itself
            client.wait_for_workers(1, timeout=parse_timedelta(CONNECT_TIMEOUT))
        except TimeoutError as err:
            raise RuntimeError(f"prepare.cluster: no Dask workers at {address!r}") from err
        cwd = [os.getcwd()] * len(chunks)
        futures = client.map(_apply, [fn] * len(chunks), chunks, cwd, pure=False)
        sizes = {f.key: len(c) for f, c in zip(futures, chunks, strict=True)}
        with tqdm(total=len(items), desc=f"{desc} ({address})", unit=unit) as bar:
            for future in as_completed(futures):
                bar.update(sizes[future.key])
        parts = client.gather(futures)
    return [r for part in parts for r in part]


def _apply(fn: Callable[[T], R], chunk: list[T], cwd: str) -> list[R]:
    """One task on a worker: the chunk, with relative paths meaning what they mean here."""
    os.chdir(cwd)  # workers are processes of their own; every task asks for the same folder
    return [fn(x) for x in chunk]
