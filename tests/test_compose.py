"""Task and recipe configurations: conf/ composes into params.yaml the way DVC does it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from facemask.params import ConfigError, compose, task_params
from tests.conftest import ROOT

TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
RECIPES = sorted(p.stem for p in (ROOT / "conf" / "recipe").glob("*.yaml"))


def test_the_committed_params_file_is_the_default_composition(tmp_path):
    # params.yaml is what `dvc exp run` would write with no override: byte for byte, so a
    # stage never reruns because an experiment rewrote it, and nobody edits a stale copy.
    compose([], tmp_path / "params.yaml", ROOT / "conf")
    assert (tmp_path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()


def test_each_task_overlay_reads_as_the_task_composed_at_the_top(tmp_path):
    # tasks/dvc.yaml runs a task on params.yaml's sections with its tasks.<name> overlay on
    # top: what `-S task=<name>` composes at the top level, so the two ways cannot disagree.
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw["tasks"]) == set(TASKS)  # every task offered is built by tasks/dvc.yaml
    for task in TASKS:
        compose([f"task={task}"], tmp_path / "p.yaml", ROOT / "conf")
        whole = yaml.safe_load((tmp_path / "p.yaml").read_text())
        assert task_params(raw, task) == {k: v for k, v in whole.items() if k != "tasks"}
    assert task_params(raw, "three_class")["classes"][2] == "mask_worn_incorrectly"


def test_hydra_composition_is_enabled_for_dvc():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "[hydra]" in config and "enabled = True" in config


@pytest.mark.parametrize("task", TASKS)
def test_every_task_composes_into_valid_params_whose_sources_map_onto_its_classes(tmp_path, task):
    params = compose([f"task={task}"], tmp_path / "p.yaml", ROOT / "conf")
    for src in params.data.sources:
        assert set(src.classes.values()) <= set(params.classes), (task, src.name)
    default = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params.train.head.epochs == default["train"]["head"]["epochs"]  # untouched keys stay


def test_tasks_and_recipes_change_what_they_say(tmp_path):
    assert {"binary", "three_class"} <= set(TASKS)
    assert {"default", "fast"} <= set(RECIPES)
    three = compose(["task=three_class"], tmp_path / "a.yaml", ROOT / "conf")
    assert three.classes == ["with_mask", "without_mask", "mask_worn_incorrectly"]
    fast = compose(["recipe=fast"], tmp_path / "b.yaml", ROOT / "conf")
    assert fast.train.finetune.epochs == 0 and fast.audit.folds == 0
    both = compose(["task=three_class", "recipe=fast"], tmp_path / "c.yaml", ROOT / "conf")
    assert both.classes == three.classes and both.train.finetune.epochs == 0
    # the defaults are binary + default: naming them changes nothing
    named = compose(["task=binary", "recipe=default"], tmp_path / "d.yaml", ROOT / "conf")
    assert (tmp_path / "d.yaml").read_text() == (ROOT / "params.yaml").read_text()
    assert named.classes == ["with_mask", "without_mask"]


def test_an_unknown_task_or_a_bad_override_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="four_class"):
        compose(["task=four_class"], tmp_path / "p.yaml", ROOT / "conf")
    good = compose([], tmp_path / "p.yaml", ROOT / "conf")
    with pytest.raises(ConfigError, match=r"train\.image_size"):
        compose(["train.image_size=tiny"], tmp_path / "p.yaml", ROOT / "conf")
    assert compose([], tmp_path / "q.yaml", ROOT / "conf") == good
    assert (tmp_path / "p.yaml").read_text() == (tmp_path / "q.yaml").read_text()  # kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml", "q.yaml"]
    with pytest.raises(ConfigError, match=r"no config\.yaml"):
        compose([], tmp_path / "p.yaml", tmp_path)


def git(*args: str, cwd) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.slow
def test_dvc_exp_run_composes_the_task_and_exp_show_lists_it(tmp_path):
    # A repository with the project's conf/ and one stage that reads what the pipeline's
    # stages read (classes, sources): `-S task=three_class` must reach it through DVC.
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(ROOT / "conf", repo / "conf")
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    (repo / "count.py").write_text(
        "import json, yaml\n"
        "p = yaml.safe_load(open('params.yaml'))\n"
        "json.dump({'classes': len(p['classes']), 'sources': len(p['data']['sources'])},"
        " open('m.json', 'w'))\n"
    )
    (repo / "dvc.yaml").write_text(
        "stages:\n  count:\n    cmd: python count.py\n    deps: [count.py]\n"
        "    params: [classes, data.sources]\n    metrics: [{m.json: {cache: false}}]\n"
    )
    dvc = [sys.executable, "-m", "dvc"]
    git("init", "-q", cwd=repo)
    git("config", "user.email", "t@example.com", cwd=repo)
    git("config", "user.name", "t", cwd=repo)
    subprocess.run([*dvc, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*dvc, "config", "hydra.enabled", "True"], cwd=repo, check=True)
    subprocess.run([*dvc, "repro", "-q"], cwd=repo, check=True, capture_output=True)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "binary", cwd=repo)
    assert json.loads((repo / "m.json").read_text())["classes"] == 2
    run = subprocess.run(
        [*dvc, "exp", "run", "-S", "task=three_class", "-n", "three"],
        cwd=repo, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads((repo / "m.json").read_text())["classes"] == 3
    assert yaml.safe_load((repo / "params.yaml").read_text())["classes"][2] == (
        "mask_worn_incorrectly"
    )
    show = subprocess.run(
        [*dvc, "exp", "show", "--json"], cwd=repo, capture_output=True, text=True, check=True
    )
    assert '"three"' in show.stdout and "mask_worn_incorrectly" in show.stdout


def test_the_compose_command_writes_params_and_refuses_an_unknown_task(tmp_path, capsys):
    from facemask.cli import main as cli

    out = tmp_path / "params.yaml"
    conf = str(ROOT / "conf")
    assert cli(["compose", "task=three_class", "--params", str(out), "--conf", conf]) == 0
    assert yaml.safe_load(out.read_text())["classes"][2] == "mask_worn_incorrectly"
    assert "task=three_class" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli(["compose", "task=nope", "--params", str(out), "--conf", conf])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "task/nope" in err and "three_class" in err  # names the options
    assert yaml.safe_load(out.read_text())["classes"][2] == "mask_worn_incorrectly"  # stands
    assert cli(["compose", "--list", "--conf", conf]) == 0
    assert "task: binary three_class" in capsys.readouterr().out
