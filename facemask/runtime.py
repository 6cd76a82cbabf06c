"""How many threads a stage's torch work gets: the cores free when it starts, re-fitted
while it runs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

ENV = "FACEMASK_THREADS"  # a fixed count wins over the estimate (0 or unset: estimate)
SAMPLE_SECONDS = 0.2  # how long CPU use is watched: 20 ticks per core at the usual 100 Hz


def usable_cores() -> set[int]:
    """CPUs this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def cpu_ticks(stat: str) -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks per CPU from /proc/stat's `cpuN` lines."""
    ticks = {}
    for line in stat.splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            # user nice system idle iowait irq softirq steal; guest time is inside user.
            v = [int(x) for x in values[:8]]
            total = sum(v)
            ticks[int(name[3:])] = (total - v[3] - v[4], total)
    return ticks


def busy_cores(before: str, after: str, cpus: Iterable[int]) -> float:
    """Cores of `cpus` kept busy between two /proc/stat snapshots.

    Measured use, not the load average: a kernel thread asleep in uninterruptible state
    adds 1 to the load on this VM while using no CPU, which made every stage here
    think one of its two cores was taken.
    """
    b, a = cpu_ticks(before), cpu_ticks(after)
    busy = 0.0
    for cpu in cpus:
        if cpu in b and cpu in a and a[cpu][1] > b[cpu][1]:
            busy += (a[cpu][0] - b[cpu][0]) / (a[cpu][1] - b[cpu][1])
    return busy


def measure_busy_cores(cpus: Iterable[int], seconds: float = SAMPLE_SECONDS) -> float:
    """Cores of `cpus` other work uses now (this process sleeps while it watches)."""
    stat = Path("/proc/stat")
    try:
        before = stat.read_text()
        time.sleep(seconds)
        after = stat.read_text()
    except OSError:  # not Linux: assume an idle machine
        return 0.0
    return busy_cores(before, after, cpus)


def free_cores(cpus: set[int] | None = None, busy: float | None = None) -> int:
    """Usable cores minus busy ones, at least 1."""
    cpus = usable_cores() if cpus is None else cpus
    busy = measure_busy_cores(cpus) if busy is None else busy
    return max(1, len(cpus) - round(busy))


def own_cpu_seconds(stat: str | None = None) -> float:
    """CPU time this process has used, all its threads (/proc/self/stat utime + stime)."""
    if stat is None:
        try:
            stat = Path("/proc/self/stat").read_text()
        except OSError:
            return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Governor:
    """What refresh_threads compares against: the last reading and whether it may act."""

    active = False  # set by use_free_cores when no fixed count was asked for
    at = 0.0
    stat = ""
    own = 0.0


def use_free_cores() -> int:
    """Set torch's intra-op threads to FACEMASK_THREADS, else to the cores free now; an
    OMP_NUM_THREADS set by the user (or by torchrun, one per process) is left as it is.

    Two heavy jobs each running one thread per core on the same cores made torch up to 10x
    slower here; a stage that starts on a busy machine takes what is left instead, and
    `refresh_threads` follows the machine while it runs. The thread count changes no result
    beyond float rounding. Returns the count set.
    """
    import torch

    fixed = int(os.environ.get(ENV) or 0)
    if fixed <= 0 and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = fixed if fixed > 0 else free_cores()
    torch.set_num_threads(threads)
    _Governor.active = fixed <= 0
    _remember(time.monotonic())
    return threads


def _remember(now: float) -> None:
    try:
        _Governor.stat = Path("/proc/stat").read_text()
    except OSError:
        _Governor.active = False
    _Governor.own = own_cpu_seconds()
    _Governor.at = now


def refresh_threads(every: float = 10.0) -> int | None:
    """Re-fit torch's threads to the cores other work left free over the last `every`
    seconds or more; call it from long loops (between batches). A no-op unless
    use_free_cores estimated the count: one short burst of other work when a stage
    starts (a git gc, an editor) no longer pins a ten-minute stage to one thread, and a
    job that starts beside a running stage gets its share. Returns the new count, if set.
    """
    now = time.monotonic()
    if not _Governor.active or now - _Governor.at < every:
        return None
    import torch

    before, own_before, elapsed = _Governor.stat, _Governor.own, now - _Governor.at
    _remember(now)
    cpus = usable_cores()
    own = (_Governor.own - own_before) / elapsed  # this process's own threads, in cores
    threads = free_cores(cpus, busy=max(0.0, busy_cores(before, _Governor.stat, cpus) - own))
    if threads == torch.get_num_threads():
        return None
    torch.set_num_threads(threads)
    return threads
