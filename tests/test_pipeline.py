"""The whole pipeline through DVC itself, in a throw-away git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_params

STAGES = [
    "download", "prepare", "split", "audit", "train", "evaluate", "external_data", "external",
    "slices", "robustness", "summary", "plots",
]  # fmt: skip


def run(cmd: list[str], cwd: Path, stdout_only: bool = False) -> str:
    # The stages' `python` must be this interpreter (the venv), whatever PATH says.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    # DVC prints warnings on stderr, after the JSON on stdout: keep them apart for --json.
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def find_key(tree: object, key: str) -> object:
    """The first value under `key` anywhere in nested dicts (DVC's JSON nests by revision)."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = find_key(value, key)
            if found is not None:
                return found
    return None


def ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


@pytest.fixture
def repo(tmp_path, tiny_zip) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "facemask", "data/label_reviews"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(tiny_zip), sort_keys=False))
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "t@example.com"], repo)
    run(["git", "config", "user.name", "t"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo)
    return repo


@pytest.mark.slow
def test_dvc_repro_param_changes_and_experiments(repo):
    dvc = [sys.executable, "-m", "dvc"]
    assert ran(run([*dvc, "repro"], repo)) == STAGES
    for out in (
        "metrics/test.json",
        "metrics/predictions.csv",
        "metrics/train_history.csv",
        "plots/confusion.png",
        "plots/gradcam.png",
        "plots/label_audit.png",
        "metrics/label_audit.csv",
        "metrics/audit.json",
        "models/model.safetensors",
    ):
        assert (repo / out).is_file(), out
    metrics = json.loads(run([*dvc, "metrics", "show", "--json"], repo, stdout_only=True))
    shown = find_key(metrics, "metrics/test.json")  # nested by revision, then by file
    written = json.loads((repo / "metrics/test.json").read_text())
    assert shown.get("data", shown)["accuracy"] == written["accuracy"]

    assert ran(run([*dvc, "repro"], repo)) == []  # nothing changed, nothing runs

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["plots"]["per_cell"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(run([*dvc, "repro"], repo)) == ["plots"]

    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    # A model swap reruns what reads `model` (audit, train) and everything after them. The
    # dry run shows the wiring without training a ResNet here (test_compare trains one).
    params["model"] = "resnet18"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(run([*dvc, "repro", "--dry"], repo)) == ["audit", "train"]  # read `model`
    after_train = ["evaluate", "external", "slices", "robustness", "summary", "plots"]
    dry = run([*dvc, "repro", "--dry", "--force-downstream"], repo)
    assert ran(dry) == ["audit", "train", *after_train]  # and what their outputs feed
    run(["git", "checkout", "params.yaml"], repo)

    # An experiment from the command line, seen by exp show, params diff and metrics diff.
    # Only robustness reads robustness.sample (train reads evaluate.abstain for its model
    # card, so most keys would retrain): two stages instead of nine.
    before = json.loads((repo / "metrics/summary.json").read_text())
    out = run([*dvc, "exp", "run", "-S", "robustness.sample=6", "-n", "small"], repo)
    assert ran(out) == ["robustness", "summary"]
    table = json.dumps(json.loads(run([*dvc, "exp", "show", "--json"], repo, stdout_only=True)))
    assert '"small"' in table
    params_diff = json.loads(run([*dvc, "params", "diff", "--json"], repo, stdout_only=True))
    sample = params_diff["params.yaml"]["robustness.sample"]
    assert (sample["old"], sample["new"]) == (12, 6), params_diff
    after = json.loads((repo / "metrics/summary.json").read_text())
    # --all: the tiny model's corrupted accuracy may not move, and the check is of the wiring.
    diff = json.loads(run([*dvc, "metrics", "diff", "--all", "--json"], repo, stdout_only=True))
    change = diff["metrics/summary.json"]["corrupted"]  # the baseline commit against the exp
    assert (change["old"], change["new"]) == (before["corrupted"], after["corrupted"]), diff
