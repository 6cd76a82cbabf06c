"""The committed lock files describe the committed code, params and stage commands: what
`dvc status` would call clean, checked without the data (a fresh clone has none)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

PIPELINES = [
    "dvc.yaml",
    "serving/dvc.yaml",
    "compare/dvc.yaml",
    "detect/dvc.yaml",
    "three_class/dvc.yaml",
]


def tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    return set(out.stdout.split())


def param_value(params: dict, dotted: str):
    value = params
    for key in dotted.split("."):
        value = value[key]
    return value


def stale_parts(pipeline: str, files: set[str]) -> list[str]:
    """What differs between a pipeline's lock and the workspace's code, params and deps."""
    folder = (ROOT / pipeline).parent
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]
    spec = yaml.safe_load((ROOT / pipeline).read_text())["stages"]
    stale = [f"{pipeline}: stage {name} never ran" for name in spec if not any(
        k == name or k.startswith(f"{name}@") for k in lock)]  # fmt: skip
    for name, stage in lock.items():
        body = spec.get(name.split("@")[0])
        # A stage turned into a foreach leaves its old, unsuffixed entry in the lock.
        if body is None or ("foreach" in body) != ("@" in name):
            stale.append(f"{pipeline}: {name} is locked but no longer in the pipeline")
            continue
        body = body.get("do", body)  # foreach stages keep theirs under `do`
        base = (folder / body.get("wdir", ".")).resolve()
        locked = {(base / d["path"]).resolve().relative_to(ROOT).as_posix() for d in stage["deps"]}
        for dep in body.get("deps", []):
            path = (base / dep).resolve().relative_to(ROOT).as_posix()
            if "${" not in dep and path not in locked:
                stale.append(f"{pipeline}:{name}: new dep {path}")
        for dep in stage.get("deps", []):
            path = (base / dep["path"]).resolve().relative_to(ROOT).as_posix()
            if path in files:  # code and small files in git; data is DVC's to check
                md5 = hashlib.md5((ROOT / path).read_bytes()).hexdigest()
                if md5 != dep["md5"]:
                    stale.append(f"{pipeline}:{name}: {path} changed")
        for file, values in (stage.get("params") or {}).items():
            current = yaml.safe_load((base / file).read_text())
            for key, value in values.items():
                if param_value(current, key) != value:
                    stale.append(f"{pipeline}:{name}: param {key} changed")
    return stale


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_committed_lock_matches_the_committed_code_and_params(pipeline):
    files = tracked()
    assert "facemask/params.py" in files or "stages/train.py" in files  # git answered
    stale = stale_parts(pipeline, files)
    assert not stale, f"rerun `dvc repro {pipeline}` and commit its lock: {stale[:8]}"


def test_an_edit_to_a_stage_file_is_seen(tmp_path, monkeypatch):
    files = tracked()
    original = (ROOT / "stages" / "train.py").read_bytes()
    real = hashlib.md5

    def fake_md5(data: bytes):  # the train stage's file reads as edited, nothing is written
        return real(data + b"#" if data == original else data)

    monkeypatch.setattr(hashlib, "md5", fake_md5)
    assert "dvc.yaml:train: stages/train.py changed" in stale_parts("dvc.yaml", files)


def test_a_stage_turned_into_a_foreach_leaves_no_old_entry(tmp_path, monkeypatch):
    spec = {"stages": {"train": {"foreach": [1, 2], "do": {"cmd": "echo ${item}"}}}}
    entry = {"cmd": "echo", "deps": []}
    lock = {"schema": "2.0", "stages": {"train@1": entry, "train@2": entry}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert stale_parts("dvc.yaml", set()) == []
    lock["stages"]["train"] = entry  # what the stage locked before it was a foreach
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert stale_parts("dvc.yaml", set()) == [
        "dvc.yaml: train is locked but no longer in the pipeline"
    ]
