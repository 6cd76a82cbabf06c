"""The committed lock files describe the committed code, params and stage commands: what
`dvc status` would call clean, checked without the data (a fresh clone has none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from tests.conftest import ROOT

# Under `pytest -n 2 --dist loadgroup` one worker runs these: DVC locks the repository it
# opens, and two workers opening this one at once would fail on that lock.
pytestmark = pytest.mark.xdist_group("root-dvc-repo")

# Every pipeline file of the project, found rather than listed: a new one is checked too.
PIPELINES = ["dvc.yaml", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/dvc.yaml"))]
# What a clone without the data or the DVC cache shows for every stage: not a change.
ABSENT = {"deleted", "not in cache"}


def lock_entries(pipeline: str, root: Path = ROOT) -> list[str]:
    """Stages that never ran, and lock entries no stage of the pipeline makes."""
    folder = (root / pipeline).parent
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]
    spec = yaml.safe_load((root / pipeline).read_text())["stages"]
    stale = [f"{pipeline}: stage {name} never ran" for name in spec if not any(
        k == name or k.startswith(f"{name}@") for k in lock)]  # fmt: skip
    for name in lock:
        body = spec.get(name.split("@")[0])
        # A stage turned into a foreach leaves its old, unsuffixed entry in the lock.
        if body is None or ("foreach" in body or "matrix" in body) != ("@" in name):
            stale.append(f"{pipeline}: {name} is locked but no longer in the pipeline")
    return stale


def stale_parts(pipeline: str, root: Path = ROOT) -> list[str]:
    """What `dvc status` finds changed in the pipeline's code, params or commands, data and
    outputs that are merely absent left aside."""
    stale = lock_entries(pipeline, root)
    with Repo(str(root)) as repo:
        status = repo.status(targets=[str(root / pipeline)])
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # "changed command", "always changed", ...
                stale.append(f"{stage}: {change}")
                continue
            for kind, entries in change.items():
                for path, state in entries.items():
                    if isinstance(state, dict):  # params: {key: new / modified / deleted}
                        stale += [f"{stage}: param {path}:{k} {s}" for k, s in state.items()]
                    elif state not in ABSENT:
                        stale.append(f"{stage}: {kind} {path} {state}")
    return stale


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_committed_lock_matches_the_committed_code_and_params(pipeline):
    stale = stale_parts(pipeline)
    assert not stale, f"rerun `dvc repro {pipeline}` and commit its lock: {stale[:8]}"


@pytest.fixture
def tiny_repo(tmp_path):
    """A git + DVC repo with one stage that depends on a code folder and a param."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    (tmp_path / "params.yaml").write_text("n: 1\n")
    stage = {"cmd": "echo made > out.txt", "deps": ["pkg"], "params": ["n"], "outs": ["out.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": stage}}))
    for args in (["init", "-q"], ["repro", "-q"]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, check=True)
    return tmp_path


def test_a_changed_code_folder_param_or_command_is_seen(tiny_repo):
    def changed(root: Path) -> list[str]:  # stage names as DVC gives them: path:name
        return [line.split("dvc.yaml:")[-1] for line in stale_parts("dvc.yaml", root)]

    assert changed(tiny_repo) == []
    (tiny_repo / "out.txt").unlink()  # absent data is not a change
    assert changed(tiny_repo) == []
    (tiny_repo / "pkg" / "a.py").write_text("A = 2\n")
    assert changed(tiny_repo) == ["make: changed deps pkg modified"]
    (tiny_repo / "pkg" / "a.py").write_text("A = 1\n")
    (tiny_repo / "params.yaml").write_text("n: 2\n")
    assert changed(tiny_repo) == ["make: param params.yaml:n modified"]
    (tiny_repo / "params.yaml").write_text("n: 1\n")
    spec = yaml.safe_load((tiny_repo / "dvc.yaml").read_text())
    spec["stages"]["make"]["cmd"] = "echo other > out.txt"
    (tiny_repo / "dvc.yaml").write_text(yaml.safe_dump(spec))
    assert changed(tiny_repo) == ["make: changed command"]


def test_a_stage_turned_into_a_foreach_leaves_no_old_entry(tmp_path):
    spec = {"stages": {"train": {"foreach": [1, 2], "do": {"cmd": "echo ${item}"}}}}
    entry = {"cmd": "echo", "deps": []}
    lock = {"schema": "2.0", "stages": {"train@1": entry, "train@2": entry}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert lock_entries("dvc.yaml", tmp_path) == []
    lock["stages"]["train"] = entry  # what the stage locked before it was a foreach
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert lock_entries("dvc.yaml", tmp_path) == [
        "dvc.yaml: train is locked but no longer in the pipeline"
    ]
