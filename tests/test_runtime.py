"""Stages take the cores that are free when they start, not one thread per core regardless."""

from __future__ import annotations

import torch

from facemask import runtime


def test_busy_cores_reads_the_larger_of_load_and_runnable():
    # 1-minute load 1.9, 1 runnable (this process): another job has been running a while.
    assert runtime.busy_cores("1.90 1.50 1.00 1/300 4242") == 1.9
    # Load still low, but 3 runnable now: a job that just started counts at once.
    assert runtime.busy_cores("0.10 0.05 0.01 3/300 4242") == 2.0


def test_free_cores_leaves_at_least_one():
    assert runtime.free_cores(2, "0.05 0.0 0.0 1/200 1") == 2  # idle machine: every core
    assert runtime.free_cores(2, "1.10 0.5 0.1 1/200 1") == 1  # one heavy job: one core left
    assert runtime.free_cores(2, "3.70 2.0 1.0 5/200 1") == 1  # overloaded: still one
    assert runtime.free_cores(16, "4.40 4.0 4.0 1/200 1") == 12


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
