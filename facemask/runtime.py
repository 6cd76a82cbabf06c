"""How many threads a stage's torch work gets: the cores free when it starts."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "FACEMASK_THREADS"  # a fixed count wins over the estimate (0 or unset: estimate)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cores(loadavg: str | None = None) -> float:
    """Cores other work keeps busy: the larger of the 1-minute load average and the
    processes runnable right now other than this one (/proc/loadavg: the first reacts
    slowly to a job that just started, the second is a noisy snapshot)."""
    if loadavg is None:
        try:
            loadavg = Path("/proc/loadavg").read_text()
        except OSError:
            return 0.0
    fields = loadavg.split()
    running = int(fields[3].split("/")[0]) - 1  # this process is runnable too
    return max(float(fields[0]), float(running), 0.0)


def free_cores(cores: int | None = None, loadavg: str | None = None) -> int:
    """Usable cores minus busy ones, at least 1."""
    cores = usable_cores() if cores is None else cores
    return max(1, cores - round(busy_cores(loadavg)))


def use_free_cores() -> int:
    """Set torch's intra-op threads to FACEMASK_THREADS, else to the cores free now; an
    OMP_NUM_THREADS set by the user (or by torchrun, one per process) is left as it is.

    Two heavy jobs each running one thread per core on the same cores made torch up to 10x
    slower here; a stage that starts on a busy machine takes what is left instead. The
    thread count changes no result beyond float rounding. Returns the count set.
    """
    import torch

    fixed = int(os.environ.get(ENV) or 0)
    if fixed <= 0 and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = fixed if fixed > 0 else free_cores()
    torch.set_num_threads(threads)
    return threads
