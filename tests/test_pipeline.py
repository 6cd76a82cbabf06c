"""The whole pipeline through DVC itself, in a throw-away git repository."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import ROOT, make_dataset, tiny_params, tool_env, zip_folder
from tests.servers import free_ports
from tests.test_remote import s3_remote, seaweedfs, write_local_config  # noqa: F401

# One worker runs this module under `pytest -n 2 --dist loadgroup`: its tests share the
# module's reproduced pipeline, which a second worker would build again.
pytestmark = pytest.mark.xdist_group("pipeline")


def task(stage: str) -> str:
    """A stage every task runs, as DVC names the default task's (tasks/dvc.yaml)."""
    return f"tasks/dvc.yaml:{stage}@binary"


STAGES = [
    *map(task, ["download", "prepare", "split"]), "train",
    *map(task, ["finder", "evaluate", "external_data", "external", "slices", "card"]),
    "summary", "plots",
]  # fmt: skip


def run(cmd: list[str], cwd: Path, stdout_only: bool = False) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    # DVC prints warnings on stderr, after the JSON on stdout: keep them apart for --json.
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def children(tree: object) -> list:
    return list(tree.values()) if isinstance(tree, dict) else tree if isinstance(tree, list) else []


def find_key(tree: object, key: str) -> object:
    """The first value under `key` anywhere in nested dicts and lists (DVC's JSON nests by
    revision)."""
    if isinstance(tree, dict) and key in tree:
        return tree[key]
    for value in children(tree):
        found = find_key(value, key)
        if found is not None:
            return found
    return None


def named(tree: object, name: str) -> dict | None:
    """The first dict whose "name" is `name` (an experiment in `dvc exp show --json`)."""
    if isinstance(tree, dict) and tree.get("name") == name:
        return tree
    for value in children(tree):
        found = named(value, name)
        if found is not None:
            return found
    return None


def ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


DVC = [sys.executable, "-m", "dvc"]


@contextmanager
def isolated_env(cache: Path) -> Iterator[None]:
    """What conftest's autouse _isolated_cache sets per test, for the module-scoped fixtures
    below (they run before any test's own monkeypatch)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEMASK_CACHE", str(cache))
        mp.setenv("FACEMASK_MIRROR", "")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


def make_repo(repo: Path, zip_path: Path) -> Path:
    """This project's dvc.yaml and code in a fresh git + DVC repository, on tiny params."""
    repo.mkdir()
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("tasks", "evaluations", "stages", "facemask", "data/label_reviews"):
        shutil.copytree(
            ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "dvc.lock")
        )
    # Every task's stages as defined, for the default task only (the others' data is real).
    tasks = yaml.safe_load((ROOT / "tasks" / "dvc.yaml").read_text())
    tasks["vars"][0]["task_dirs"] = {"binary": tasks["vars"][0]["task_dirs"]["binary"]}
    (repo / "tasks" / "dvc.yaml").write_text(yaml.safe_dump(tasks, sort_keys=False))
    params = tiny_params(zip_path)
    params["tasks"] = {"binary": {}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "t@example.com"], repo)
    run(["git", "config", "user.name", "t"], repo)
    run([*DVC, "init", "-q"], repo)
    run([*DVC, "config", "core.analytics", "false"], repo)
    return repo


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a repository, its git history, DVC cache and workspace: DVC rehashes the
    copy's files (its state is kept per path), so nothing reruns unless something changed."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


@dataclass
class Reproduced:
    repo: Path  # not committed, as `dvc repro` leaves it: each test works on a copy
    output: str  # what that first `dvc repro` printed


# Session scope, not module: a worker that runs another module's test in between would
# otherwise tear the pipeline down and build it again.
@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> Reproduced:
    """The whole pipeline, reproduced once for these tests: every test below starts from a
    copy instead of running download -> plots again (a minute on two cores each time)."""
    base = tmp_path_factory.mktemp("pipeline")
    with isolated_env(base / "cache"):
        make_dataset(base / "src")
        repo = make_repo(base / "repo", zip_folder(base / "src", base / "tiny.zip"))
        return Reproduced(repo, run([*DVC, "repro"], repo))


@pytest.fixture
def repo(reproduced, tmp_path) -> Path:
    return copy_repo(reproduced.repo, tmp_path / "repo")


@pytest.mark.slow
def test_dvc_repro_param_changes_and_experiments(reproduced, repo):
    assert ran(reproduced.output) == STAGES  # the first `dvc repro`; `repo` is its copy
    for out in (
        "metrics/test.json",
        "metrics/predictions.csv",
        "metrics/train/metrics.json",  # DVCLive's folder
        "metrics/train/plots/metrics/valid_loss.tsv",
        "plots/confusion.png",
        "plots/gradcam.png",
        "models/model.safetensors",
    ):
        assert (repo / out).is_file(), out
    metrics = json.loads(run([*DVC, "metrics", "show", "--json"], repo, stdout_only=True))
    shown = find_key(metrics, "metrics/test.json")  # nested by revision, then by file
    written = json.loads((repo / "metrics/test.json").read_text())
    assert shown.get("data", shown)["accuracy"] == written["accuracy"]

    assert ran(run([*DVC, "repro"], repo)) == []  # nothing changed, nothing runs
    # The evaluations beyond the product: a pipeline of their own that `dvc repro` left alone.
    dry = run([*DVC, "repro", "--dry", "evaluations/dvc.yaml"], repo)
    evaluations = set(re.findall(r"Running stage '([^']+)'", dry))
    assert evaluations == {f"evaluations/dvc.yaml:{s}" for s in ("audit", "robustness", "explain")}

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["plots"]["per_cell"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(run([*DVC, "repro"], repo)) == ["plots"]

    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    # A model swap reruns what reads `model` (train) and everything after it. The dry run
    # shows the wiring without training a ResNet here (test_compare trains one).
    params["model"] = "resnet18"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # train reads `model`, and the card names it
    assert ran(run([*DVC, "repro", "--dry"], repo)) == ["train", task("card")]
    after_train = [*map(task, ["evaluate", "external", "slices", "card"]), "summary", "plots"]
    dry = run([*DVC, "repro", "--dry", "--force-downstream"], repo)
    assert ran(dry) == ["train", *after_train]  # and what its outputs feed
    run(["git", "checkout", "params.yaml"], repo)

    # An experiment from the command line, seen by exp show, params diff and metrics diff.
    # Only slices reads slices.bootstrap (train reads evaluate.abstain for its model card, so
    # most keys would retrain): three stages instead of nine.
    before = json.loads((repo / "metrics/summary.json").read_text())
    out = run([*DVC, "exp", "run", "-S", "slices.bootstrap=50", "-n", "small"], repo)
    assert ran(out) == [task("slices"), task("card"), "summary"]
    table = json.dumps(json.loads(run([*DVC, "exp", "show", "--json"], repo, stdout_only=True)))
    assert '"small"' in table
    params_diff = json.loads(run([*DVC, "params", "diff", "--json"], repo, stdout_only=True))
    changed = params_diff["params.yaml"]["slices.bootstrap"]
    assert (changed["old"], changed["new"]) == (100, 50), params_diff
    after = json.loads((repo / "metrics/summary.json").read_text())
    # --all: the numbers may not move with the bootstrap, and the check is of the wiring:
    # each of the summary's numbers, the baseline commit's against the experiment's.
    diff = json.loads(run([*DVC, "metrics", "diff", "--all", "--json"], repo, stdout_only=True))
    shown = diff["metrics/summary.json"]
    numbers = [k for k, v in after.items() if isinstance(v, int | float)]
    assert "held_in" in numbers, after
    got = {k: (shown[k]["old"], shown[k]["new"]) for k in numbers}
    assert got == {k: (before[k], after[k]) for k in numbers}, diff


@dataclass
class OneProcess:
    repo: Path  # committed: experiments start from it
    params: dict
    model: dict  # the state dict one process trained


@pytest.fixture(scope="session")
def one_process(reproduced, tmp_path_factory) -> OneProcess:
    """The reproduced pipeline with params whose training does not depend on the process
    count, and the model one plain `dvc repro train` writes with them; tests take copies."""
    from safetensors.torch import load_file

    base = tmp_path_factory.mktemp("one_process")
    repo = copy_repo(reproduced.repo, base / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # Augmentation and dropout draw from one stream per process (seed, epoch, rank), so with
    # them on N processes train like another seed; off, the result must not depend on N.
    # resnet18 (from scratch, 32 px) has no dropout layer; facemask_cnn has one.
    params["model"] = "resnet18"
    params["train"]["head"]["dropout"] = 0.0
    params["train"]["finetune"]["augment"].update(
        rotation=0, hflip=False, color_jitter=0, scale=[1.0, 1.0], degrade=0
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with isolated_env(base / "cache"):
        out = run([*DVC, "repro", "train"], repo)
    assert "processes: " not in out and ran(out) == ["train"]  # plain python; data as it was
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "one process"], repo)
    return OneProcess(repo, params, load_file(repo / "models/model.safetensors"))


def assert_same_model(repo: Path, one: dict) -> None:
    """The model in `repo` is `one` within the tolerance of test_two_processes_train_and_extract."""
    from safetensors.torch import load_file

    two = load_file(repo / "models/model.safetensors")
    assert one.keys() == two.keys()
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_exp_run_trains_under_torchrun_when_launch_asks(one_process, tmp_path):
    """`dvc exp run -S launch.processes=2`: the train stage restarts itself under
    torchrun (two gloo processes) and writes the model one process writes."""
    repo = copy_repo(one_process.repo, tmp_path / "repo")
    params, one = one_process.params, one_process.model
    out = run([*DVC, "exp", "run", "train", "-S", "launch.processes=2", "-n", "two"], repo)
    assert ran(out) == ["train"], out
    assert "train: 2 x 1 processes:" in out and "torch.distributed.run" in out  # torchrun ran
    assert_same_model(repo, one)
    # DVCLive, from rank 0 only: one row per epoch; exp show lists the run with its summary,
    # plots show draws its curves.
    summary = json.loads((repo / "metrics/train/metrics.json").read_text())
    assert summary["epochs_finetune"] == params["train"]["finetune"]["epochs"]
    curve = (repo / "metrics/train/plots/metrics/valid_loss.tsv").read_text().splitlines()
    assert len(curve) == 1 + summary["epochs_head"] + summary["epochs_finetune"]
    table = json.loads(run([*DVC, "exp", "show", "--json"], repo, stdout_only=True))
    shown = find_key(named(table, "two"), "metrics/train/metrics.json")
    assert shown.get("data", shown)["best_valid_loss"] == summary["best_valid_loss"]
    plots = run([*DVC, "plots", "show", "--json", "metrics/train/plots/metrics"], repo, True)
    drawn = find_key(json.loads(plots), "metrics/train/plots/metrics/valid_loss.tsv")
    assert str(summary["best_valid_loss"]) in json.dumps(drawn)  # its rows, not only its name


@pytest.mark.slow
def test_two_machines_train_one_model_and_machine_zero_writes_it(one_process, tmp_path):
    """launch.nodes=2 on loopback: machine 0 runs `dvc exp run`, machine 1 (its own checkout
    of the same commit) runs the stage by hand with --node-rank 1; they meet at machine 0's
    rendezvous, train the one-process model, and only machine 0 writes outputs."""
    repo = copy_repo(one_process.repo, tmp_path / "repo")
    one = one_process.model
    other = copy_repo(one_process.repo, tmp_path / "machine1")
    launch = {"nodes": 2, "rendezvous": f"127.0.0.1:{free_ports(1)[0]}"}
    params = yaml.safe_load((other / "params.yaml").read_text())
    params["launch"].update(launch)  # machine 1's checkout; machine 0 gets them from -S
    (other / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    model = other / "models/model.safetensors"
    before = model.stat().st_mtime_ns
    cmd = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]["cmd"].split()
    assert cmd[:3] == ["python", "-m", "stages.train"]
    machine1 = subprocess.Popen(
        [sys.executable, *cmd[1:], "--node-rank", "1"], cwd=other, env=tool_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        dvc = [*DVC, "exp", "run", "train", "-n", "nodes"]
        out = run([*dvc, *(a for k, v in launch.items() for a in ("-S", f"launch.{k}={v}"))], repo)
        log, _ = machine1.communicate(timeout=120)
    finally:
        machine1.kill()
    assert machine1.returncode == 0, log
    assert "train: 1 x 2 processes:" in out and "--node-rank=0" in out, out
    assert "--node-rank=1" in log, log
    assert ran(out) == ["train"], out
    assert_same_model(repo, one)
    assert model.stat().st_mtime_ns == before  # machine 1 trained but wrote nothing


@pytest.mark.slow
def test_the_pipeline_through_the_remote_and_the_queue(repo, seaweedfs, tmp_path):  # noqa: F811
    """This project's dvc.yaml on tiny data: pushed to a real S3 server on loopback, pulled
    into a fresh clone that has nothing to rerun; two queued experiments run and show."""
    shutil.rmtree(repo / "evaluations")  # never run here: a teammate's pull would miss them
    remote = s3_remote(seaweedfs)
    run([*DVC, "remote", "add", "-d", "storage", remote.url], repo)
    run([*DVC, "remote", "modify", "storage", "endpointurl", remote.options["endpointurl"]], repo)
    write_local_config(repo, remote.secrets)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pipeline run"], repo)
    run([*DVC, "push", "-q"], repo)

    teammate = tmp_path / "teammate"
    run(["git", "clone", "-q", str(repo), str(teammate)], tmp_path)
    shutil.copy(repo / ".dvc" / "config.local", teammate / ".dvc" / "config.local")
    run([*DVC, "pull", "-q"], teammate)
    assert (teammate / "models/model.safetensors").read_bytes() == (
        repo / "models/model.safetensors"
    ).read_bytes()
    assert "Data and pipelines are up to date." in run([*DVC, "status"], teammate)
    assert ran(run([*DVC, "repro"], teammate)) == []

    for n in (6, 8):
        run([*DVC, "exp", "run", "--queue", "-S", f"slices.bootstrap={n}", "-n", f"s{n}"], repo)
    run([*DVC, "exp", "run", "--run-all", "--jobs", "2"], repo)  # a worker each, side by side
    shown = json.loads(run([*DVC, "exp", "show", "--json"], repo, stdout_only=True))
    names = json.dumps(shown)
    assert '"s6"' in names and '"s8"' in names
    drawn = {find_key(e, "name"): find_key(e, "slices") for e in _experiments(shown)}
    assert {k: v["bootstrap"] for k, v in drawn.items() if k in ("s6", "s8")} == {"s6": 6, "s8": 8}


def _experiments(shown: list) -> list[dict]:
    """Every experiment record under the baseline rows of `dvc exp show --json`."""
    return [e for row in shown for ex in row.get("experiments") or [] for e in ex["revs"]]
