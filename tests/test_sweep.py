"""scripts/sweep.py through DVC's real experiment queue, on a throw-away repository whose
one stage fails for x = 3 and sleeps as long as params say."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.sweep import exit_code, lookup, overridden_keys
from tests.conftest import ROOT, tool_env

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "sweep.py"

STEP = """\
import json, os, sys, time
import yaml

if os.environ.get("STEP_PIDS"):  # the tests look for runs left behind
    with open(os.environ["STEP_PIDS"], "a") as f:
        f.write(f"{os.getpid()}\\n")
params = yaml.safe_load(open("params.yaml"))
time.sleep(params["sleep"])
if params["x"] == 3:
    sys.exit("x=3 is not allowed")
json.dump({"score": params["x"] * 10}, open("metrics.json", "w"))
"""

DVC_YAML = """\
stages:
  step:
    cmd: python step.py
    deps: [step.py]
    params: [x, sleep]
    metrics:
      - metrics.json:
          cache: false
"""


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Baseline x = 1 with its metrics committed (score 10), so a failed run could show them."""
    repo = tmp_path_factory.mktemp("sweep") / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    (repo / "params.yaml").write_text("x: 1\nsleep: 0  # seconds\n")
    (repo / "step.py").write_text(STEP)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "metrics.json").write_text('{"score": 10}')
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    return repo


@pytest.fixture
def repo(template, tmp_path, monkeypatch) -> Path:
    """A copy per test (each has its own queue) whose stage runs log their pids."""
    repo = tmp_path / "repo"
    shutil.copytree(template, repo)
    pids = tmp_path / "pids"
    monkeypatch.setenv("STEP_PIDS", str(pids))  # the queue's workers inherit it
    yield repo
    # A test that failed half-way must not leave a 2-minute stage running. The queue's
    # workers themselves exit 10 s after the queue runs dry.
    for pid in read_pids(pids):
        if alive(pid):
            os.kill(pid, signal.SIGTERM)


def read_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to read its exit."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def queue_status(repo: Path) -> str:
    return run([sys.executable, "-m", "dvc", "queue", "status"], repo).stdout


def sweep(repo: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--repo", str(repo), "--poll", "2", *args]
    return subprocess.run(
        cmd, cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=300
    )


def table(stdout: str) -> dict[str, list[str]]:
    """The printed table as {x: [state, x, columns...]} (names are DVC's random words)."""
    lines = stdout.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("experiment")), None)
    assert start is not None, f"no table in:\n{stdout}"
    rows = [ln.split() for ln in lines[start + 1 :] if ln.strip()]
    return {row[2]: row[1:] for row in rows}


def test_sweep_fails_when_one_experiment_fails(repo):
    # One setting, a grid of two: DVC expands the comma list itself.
    proc = sweep(repo, "-j", "2", "--timeout", "240", "--columns", "score", "x=2,3")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert table(proc.stdout) == {
        "2": ["success", "2", "20"],
        "3": ["failed", "3", "-"],  # not the baseline's 10 left in its commit
    }
    assert "x=3 is not allowed" in proc.stderr  # the failed run's log tail


def test_sweep_times_out_and_leaves_nothing_running(repo, tmp_path):
    proc = sweep(repo, "--timeout", "5", "x=6 sleep=120", "x=7 sleep=120")
    assert proc.returncode == 124, proc.stdout + proc.stderr
    assert "timed out" in proc.stderr
    states = {row[0] for row in table(proc.stdout).values()}
    assert states <= {"killed", "removed"} and "removed" in states, proc.stdout
    status = queue_status(repo)
    assert "Queued" not in status and "Running" not in status, status
    started = read_pids(tmp_path / "pids")
    assert all(not alive(pid) for pid in started), "a killed experiment's stage runs on"


def test_a_bad_setting_dequeues_the_settings_before_it(repo):
    proc = sweep(repo, "x=8", "no_such_param=1")
    assert proc.returncode == 1
    assert "no_such_param" in proc.stderr
    assert "Queued" not in queue_status(repo)


def test_exit_code_is_zero_only_when_every_experiment_succeeded():
    names = ["a", "b"]
    assert exit_code({"a": "success", "b": "success"}, names, done=True) == 0
    assert exit_code({"a": "success", "b": "failed"}, names, done=True) == 1
    assert exit_code({"a": "success"}, names, done=True) == 1  # b vanished from the queue
    assert exit_code({"a": "success", "b": "running"}, names, done=False) == 124


def test_overridden_keys_are_the_params_columns():
    assert overridden_keys(["model=a,b train.lr=0.1", "model=c", "+extra=1"]) == [
        "model",
        "train.lr",
        "extra",
    ]


def test_lookup_reads_dotted_keys_from_the_named_file_or_any():
    exp = {
        "params": {"params.yaml": {"train": {"lr": 0.1}}},
        "metrics": {"a.json": {"acc": 0.5}, "b.json": {"acc": 0.9, "macro": {"f1": 0.8}}},
    }
    assert lookup("train.lr", exp) == 0.1
    assert lookup("b.json:acc", exp) == 0.9
    assert lookup("acc", exp) == 0.5  # the first file that has it
    assert lookup("macro.f1", exp) == 0.8
    assert lookup("a.json:macro.f1", exp) is None
