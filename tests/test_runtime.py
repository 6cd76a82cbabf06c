"""Stages take the cores that are free when they start, not one thread per core regardless."""

from __future__ import annotations

import subprocess
import sys

import torch

from facemask import runtime
from tests.conftest import ROOT


def _stat(*cpus: tuple[int, int]) -> str:
    """A /proc/stat text: per CPU (busy, idle) ticks, busy split over user and system."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    for i, (busy, idle) in enumerate(cpus):
        lines.append(f"cpu{i} {busy - busy // 3} 0 {busy // 3} {idle} 0 0 0 0 0 0")
    return "\n".join([*lines, "intr 1 2 3", "ctxt 99"]) + "\n"


def test_busy_cores_measures_use_per_cpu():
    before = _stat((1000, 5000), (2000, 5000))
    # cpu0 fully busy, cpu1 idle: one core taken.
    after = _stat((1020, 5000), (2000, 5020))
    assert runtime.busy_cores(before, after, {0, 1}) == 1.0
    # Only CPUs this process may use count: cpu0 is outside its cpuset here.
    assert runtime.busy_cores(before, after, {1}) == 0.0
    # Half of each: one core's worth.
    after = _stat((1010, 5010), (2010, 5010))
    assert runtime.busy_cores(before, after, {0, 1}) == 1.0
    # iowait is idle time, not work.
    io_before = "cpu0 100 0 0 500 0 0 0 0\n"
    io_after = "cpu0 100 0 0 500 40 0 0 0\n"
    assert runtime.busy_cores(io_before, io_after, {0}) == 0.0


def test_measured_idle_machine_is_not_busy_despite_load_average(monkeypatch):
    # The VM this was written on shows a load average of ~1 while idle (a kernel thread
    # in uninterruptible sleep); the estimate must come from CPU use.
    snapshots = iter([_stat((10, 90), (10, 90)), _stat((10, 110), (10, 110))])
    monkeypatch.setattr(runtime.Path, "read_text", lambda self: next(snapshots))
    assert runtime.free_cores({0, 1}) == 2


def test_free_cores_leaves_at_least_one():
    assert runtime.free_cores({0, 1}, busy=0.1) == 2  # idle machine: every core
    assert runtime.free_cores({0, 1}, busy=1.1) == 1  # one heavy job: one core left
    assert runtime.free_cores({0, 1}, busy=2.0) == 1  # all taken: still one
    assert runtime.free_cores(set(range(16)), busy=4.4) == 12


def test_env_fixes_the_count_and_omp_is_respected(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(runtime.ENV, "1")
        assert runtime.use_free_cores() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv(runtime.ENV)
        monkeypatch.setattr(runtime, "free_cores", lambda: 2)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert runtime.use_free_cores() == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's per-process setting wins
        torch.set_num_threads(1)
        assert runtime.use_free_cores() == 1
    finally:
        torch.set_num_threads(before)


def test_refresh_follows_other_work_and_ignores_its_own(monkeypatch):
    """A burst at start-up must not pin a stage to one thread; a job starting beside it
    must take threads away; this process's own use is not 'other work'."""
    before = torch.get_num_threads()
    clock = iter([0.0, 20.0, 40.0, 45.0, 50.0, 70.0])
    monkeypatch.setattr(runtime.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(runtime, "usable_cores", lambda: {0, 1})
    monkeypatch.delenv(runtime.ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    stats = iter(
        [
            _stat((0, 0), (0, 0)),  # use_free_cores: start
            _stat((2000, 0), (2000, 0)),  # 20 s later: both cores busy, all of it ours
            _stat((4000, 0), (2000, 2000)),  # 20 s more: cpu0 busy, someone else's
            _stat((4000, 0), (2000, 2000)),
        ]
    )
    own = iter([0.0, 40.0, 40.0, 40.0])  # 40 cpu-seconds in the first 20 s, none in the next 20
    monkeypatch.setattr(runtime.Path, "read_text", lambda self: next(stats))
    monkeypatch.setattr(runtime, "own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(runtime, "measure_busy_cores", lambda cpus: 1.0)  # a start-up burst
    try:
        assert runtime.use_free_cores() == 1
        assert runtime.refresh_threads() == 2  # the burst is gone; our own load doesn't count
        assert torch.get_num_threads() == 2
        assert runtime.refresh_threads() == 1  # another job took a core
        assert runtime.refresh_threads() is None  # 5 s later: too soon to look again
        monkeypatch.setenv(runtime.ENV, "2")  # a fixed count is never changed
        runtime.use_free_cores()
        assert runtime.refresh_threads() is None
    finally:
        runtime._Governor.active = False
        torch.set_num_threads(before)


def test_tune_malloc_freezes_the_heap_before_the_exit_collections():
    # atexit runs handlers last-registered first: the probe, registered before tune_malloc,
    # runs after its gc.freeze and sees what freeze left (nothing, without the handler).
    code = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n"
        "from facemask.config import tune_malloc\n"
        "tune_malloc(); tune_malloc()\n"
        "junk = [[i] for i in range(1000)]\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert out[0] == "frozen" and int(out[1]) > 1000, out
    assert len(out) == 2  # registered once however often it is called
