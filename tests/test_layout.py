"""The house rules the code must keep: dvc.yaml lists the code each stage runs, caches are
keyed by code, and the library's layers point one way."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from facemask.config import code_fingerprint, facemask_imports, module_file
from tests.conftest import ROOT

# Every pipeline file, found rather than listed (test_every_stage_is_found counts them).
PIPELINES = [ROOT / "dvc.yaml", *sorted(ROOT.glob("*/dvc.yaml"))]


def stage_modules(pipeline: Path) -> list[tuple[str, str, list[str]]]:
    """(stage name, its python module, its deps as repo-relative paths) for every stage."""
    spec = yaml.safe_load(pipeline.read_text())
    wdir = pipeline.parent.relative_to(ROOT)  # a stage's own `wdir` is relative to this
    out = []
    for name, stage in spec["stages"].items():
        body = stage.get("do", stage)  # foreach/matrix stages keep theirs under `do`
        words = body["cmd"].split()
        if "-m" not in words:
            continue
        module = words[words.index("-m") + 1]
        base = ROOT / wdir / body.get("wdir", ".")
        deps = [str((base / d).resolve().relative_to(ROOT)) for d in body.get("deps", [])]
        out.append((f"{pipeline.relative_to(ROOT)}:{name}", module, deps))
    return out


STAGES = [s for p in PIPELINES for s in stage_modules(p)]


def test_every_stage_is_found():
    names = {s[0].split(":")[1] for s in STAGES}
    # A parser that misses stages would make the test below pass vacuously.
    assert {"download", "prepare", "split", "audit", "train", "evaluate", "plots"} <= names
    assert len(PIPELINES) >= 7  # root, tasks, three_class, evaluations, serving, detect, compare


def test_a_stage_every_task_runs_is_defined_once_for_all_tasks():
    # tasks/dvc.yaml defines each shared stage once, over every task: a copy of one of its
    # scripts in another pipeline file would drift from it.
    spec = yaml.safe_load((ROOT / "tasks" / "dvc.yaml").read_text())
    dirs = spec["vars"][0]["task_dirs"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(dirs) == set(params["tasks"]) >= {"binary", "three_class"}
    for name, stage in spec["stages"].items():
        assert stage["foreach"] == "${task_dirs}", name
        assert "--task ${key}" in stage["do"]["cmd"], name

    def runs(pipeline: Path) -> set[tuple[str, ...]]:
        """Each stage as its script and the options it passes (another use of a script, such
        as download --section scene_sources, is not a copy)."""
        spec = yaml.safe_load(pipeline.read_text())["stages"]
        cmds = [st.get("do", st)["cmd"].split() for st in spec.values()]
        skip = {"--task", "--params"}
        return {
            (c[c.index("-m") + 1], *sorted({w for w in c if w[:2] == "--"} - skip)) for c in cmds
        }

    shared = runs(ROOT / "tasks" / "dvc.yaml")
    assert len(shared) == len(spec["stages"]) >= 9
    for pipeline in PIPELINES:
        if pipeline.parent.name != "tasks":
            assert not shared & runs(pipeline), (pipeline, sorted(shared & runs(pipeline)))
            assert not set(spec["stages"]) & set(yaml.safe_load(pipeline.read_text())["stages"])


@pytest.mark.parametrize("stage,module,deps", STAGES, ids=[s[0] for s in STAGES])
def test_stage_deps_list_every_imported_module(stage, module, deps):
    needed = {str(module_file(m).relative_to(ROOT)) for m in facemask_imports(module)}
    needed = {n for n in needed if not (n.endswith("__init__.py") and _empty(n))}
    covered = {n for n in needed if any(n == d or n.startswith(d.rstrip("/") + "/") for d in deps)}
    assert needed == covered, f"{stage}: dvc.yaml deps miss {sorted(needed - covered)}"


def _empty(path: str) -> bool:
    text = (ROOT / path).read_text()
    return not [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("#", '"""'))]


def test_import_walk_follows_imports_transitively():
    # stages.train imports data.cache, which alone imports data.images.
    found = facemask_imports("stages.train")
    assert "facemask.data.cache" in found
    assert "facemask.data.images" in found
    assert "facemask.explain.cams" not in found  # not reached: not listed


LAYERS = [
    "config", "data", "models", "evaluation", "training",
    "explain", "detection", "serving", "synthesis",
]  # fmt: skip


@pytest.mark.parametrize("layer", LAYERS[1:])
def test_layers_point_one_way(layer):
    """data never imports models; models never import evaluation; evaluation (metrics, predictions)
    never imports training (which selects models by evaluating them); and so on."""
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    package = importlib.import_module(f"facemask.{layer}")
    for f in sorted(Path(package.__file__).parent.glob("*.py")):
        name = f"facemask.{layer}.{f.stem}"
        for dep in facemask_imports(name):
            part = dep.split(".")[1] if dep.count(".") else ""
            assert part not in above, f"{name} imports {dep} (a layer above it)"
            assert not dep.startswith("stages"), f"{name} imports {dep}"


def test_code_fingerprint_changes_with_imported_code(tmp_path, monkeypatch):
    """A cache keyed by code_fingerprint misses after a change to any module it reaches."""
    before = code_fingerprint("facemask.training.features")
    target = module_file("facemask.data.images")  # reached only through data.cache
    original = target.read_bytes()
    try:
        target.write_bytes(original + b"\n# changed\n")
        after = code_fingerprint("facemask.training.features")
    finally:
        target.write_bytes(original)
    assert after != before
    assert code_fingerprint("facemask.training.features") == before  # same code, same key
    # Code the features never run does not invalidate them.
    other = module_file("facemask.explain.figures")
    original = other.read_bytes()
    try:
        other.write_bytes(original + b"\n# changed\n")
        assert code_fingerprint("facemask.training.features") == before
    finally:
        other.write_bytes(original)


def test_every_third_party_import_is_declared():
    """A module the code imports must come from a distribution pyproject.toml names."""
    import ast
    import importlib.metadata
    import re
    import sys
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in declared}
    owners = importlib.metadata.packages_distributions()
    # dlib-bin's top_level.txt names only its extension module, not the `dlib` package.
    owners.setdefault("dlib", []).append("dlib-bin")
    missing = {}
    for path in sorted([*ROOT.glob("facemask/**/*.py"), *ROOT.glob("stages/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top in sys.stdlib_module_names or top in ("facemask", "stages"):
                    continue
                dists = {d.lower().replace("_", "-") for d in owners.get(top, [top])}
                if not dists & names:
                    missing.setdefault(top, str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def function_lengths(root: Path) -> dict[str, int]:
    """Lines of every function and method under root (decorators not counted)."""
    import ast

    found = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{path.relative_to(root.parent)}:{node.name}"
                found[name] = node.end_lineno - node.lineno + 1
    return found


def test_no_function_in_the_package_is_longer_than_a_screen():
    lengths = function_lengths(ROOT / "facemask")
    assert len(lengths) > 300  # the walk found the package's functions
    assert lengths["facemask/training/train.py:fine_tune"] > 20
    too_long = {name: n for name, n in lengths.items() if n > 80}
    assert not too_long, f"functions over 80 lines: {too_long}"


def test_every_detection_chain_is_scored_on_every_scene_set_by_one_stage():
    spec = yaml.safe_load((ROOT / "detect" / "dvc.yaml").read_text())
    names = {k for v in spec["vars"] if isinstance(v, dict) for k in v}
    chains, sets, runs = (
        next(v[k] for v in spec["vars"] if isinstance(v, dict) and k in v)
        for k in ("chains", "sets", "scene_runs")
    )
    assert {"chains", "sets", "scene_runs"} <= names
    assert set(runs) == {f"{c}-{s}" for c in chains for s in sets}  # the whole product
    for key, run in runs.items():
        chain, name = key.split("-")
        assert (run["chain"], run["set"], run["name"]) == (chains[chain], sets[name], name)
    stage = spec["stages"]["scenes"]
    assert stage["foreach"] == "${scene_runs}"
    assert not [s for s in spec["stages"] if s.startswith("scenes_")]  # no copies beside it
