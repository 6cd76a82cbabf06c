"""The model registry: the project's `artifacts:` entry, registered with GTO and pushed to a
real S3 server (SeaweedFS on loopback), is fetched by `dvc artifacts get` into an empty
folder from a fresh clone's point of view, and `facemask predict` answers with it."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dvc.repo import Repo

from facemask.cli import main
from tests.conftest import scene
from tests.test_remote import dvc, run, s3_remote, seaweedfs  # noqa: F401  # seaweedfs too

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
GTO = str(Path(sys.executable).parent / "gto")  # installed with dvc


def project_artifacts() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]


@pytest.mark.xdist_group("root-dvc-repo")  # DVC locks this repository: one worker at a time
def test_the_registry_names_the_classifier_the_pipeline_trains():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    entry = spec["artifacts"]["mask-classifier"]
    assert entry["type"] == "model" and entry["desc"]
    with Repo(ROOT) as repo:  # every stage's outputs as DVC resolves them (foreach included)
        outs = {o.fs_path.removeprefix(f"{ROOT}/") for st in repo.index.stages for o in st.outs}
    assert entry["path"] in outs  # a stage output, so `dvc push` sends it
    finder = spec["artifacts"]["face-finder"]["path"]  # predict reads it beside the model
    assert finder in outs and Path(finder).parent == Path(entry["path"]).parent
    for sub, name, stage in (("serving", "mask-classifier-onnx", "export"),
                             ("detect", "no-face-rescorer", "noface"),
                             ("detect", "box-refiner", "refine")):  # fmt: skip
        sub_spec = yaml.safe_load((ROOT / sub / "dvc.yaml").read_text())
        path = (ROOT / sub / sub_spec["artifacts"][name]["path"]).resolve()
        resolved = path.relative_to(ROOT.resolve()).as_posix()
        outs = [
            o if isinstance(o, str) else next(iter(o)) for o in sub_spec["stages"][stage]["outs"]
        ]
        assert resolved in outs, (sub, name, resolved, outs)


def test_artifacts_get_fetches_the_registered_model_and_predict_runs(
    tmp_path, seaweedfs, model_file, capsys  # noqa: F811
):  # fmt: skip
    remote = s3_remote(seaweedfs)
    repo = tmp_path / "registry"
    (repo / "models").mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    dvc("init", "-q", cwd=repo)
    shutil.copy(model_file, repo / "models" / "model.safetensors")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"artifacts": project_artifacts()}))
    dvc("add", "-q", "models/model.safetensors", cwd=repo)
    dvc("remote", "add", "-d", "storage", remote.url, cwd=repo)
    dvc("remote", "modify", "storage", "endpointurl", remote.options["endpointurl"], cwd=repo)
    for key, value in remote.secrets.items():
        dvc("remote", "modify", "--local", "storage", key, value, cwd=repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "classifier v1"], repo)
    run([GTO, "register", "mask-classifier", "--version", "v1.0.0"], repo)
    dvc("push", "-q", cwd=repo)
    shutil.rmtree(repo / ".dvc" / "cache")  # the model can only come from the remote now

    deploy = tmp_path / "deploy"
    deploy.mkdir()
    creds = [f"{k}={v}" for k, v in remote.secrets.items()]
    got = dvc("artifacts", "get", str(repo), "mask-classifier", "-o", "model.safetensors",
              "--remote-config", *creds, cwd=deploy)  # fmt: skip
    assert (deploy / "model.safetensors").read_bytes() == model_file.read_bytes(), got.stdout
    assert sorted(p.name for p in deploy.iterdir()) == ["model.safetensors"]

    scene(np.random.default_rng(0)).save(tmp_path / "scene.jpg")
    fetched = str(deploy / "model.safetensors")
    code = main(["predict", str(tmp_path / "scene.jpg"), "--model", fetched,
                 "--detector", "two", "--no-progress"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    assert len(pd.read_csv(io.StringIO(out))) == 2  # the stub detector's two faces


def test_an_unregistered_name_is_refused(tmp_path):
    repo = tmp_path / "registry"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    dvc("init", "-q", cwd=repo)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"artifacts": project_artifacts()}))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "no versions yet"], repo)
    proc = dvc("artifacts", "get", str(repo), "mask-classifier", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "Unable to find artifact 'mask-classifier'" in proc.stderr  # no version tag yet
