"""scripts/pr_report.py on a throw-away repository with two commits, and the workflow that
runs it on pull requests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.pr_report import count_rows
from tests.conftest import ROOT, tool_env

SCRIPT = ROOT / "scripts" / "pr_report.py"

DVC_YAML = """\
stages:
  train:
    cmd: python train.py
    params: [train]
    metrics:
      - metrics/test.json:
          cache: false
    plots:
      - metrics/history.csv:
          cache: false
          x: epoch
          y: loss
"""


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = tool_env()
    for key in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        env.pop(key, None)  # the report links the Actions run only inside Actions
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def commit_results(repo: Path, lr: float, accuracy: float, errors: int, losses: list[float]):
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": lr, "epochs": 3}}))
    (repo / "metrics" / "test.json").write_text(
        json.dumps({"accuracy": accuracy, "errors": errors, "n": 573})
    )
    rows = "".join(f"{i},{loss}\n" for i, loss in enumerate(losses, 1))
    (repo / "metrics" / "history.csv").write_text("epoch,loss\n" + rows)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", f"lr={lr}"], repo)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """main: lr 0.1, 90 % with 10 errors; branch `pr`: lr 0.01, 95 % with 5 errors."""
    repo = tmp_path_factory.mktemp("pr") / "repo"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    (repo / "metrics").mkdir()
    (repo / "dvc.yaml").write_text(DVC_YAML)
    commit_results(repo, 0.1, 0.9, 10, [0.51, 0.31])
    run(["git", "checkout", "-qb", "pr"], repo)
    commit_results(repo, 0.01, 0.95, 5, [0.42, 0.22])
    return repo


def report(repo: Path, out: Path, *args: str, check: bool = True):
    cmd = [sys.executable, str(SCRIPT), "--repo", str(repo), "--out", str(out), *args]
    return run(cmd, repo, check)


def table(markdown: str, heading: str) -> dict[str, list[str]]:
    """The GFM table under `### heading`, as {second column: the cells after it}."""
    section = markdown.split(f"### {heading}")[1].split("###")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")][2:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return {c[1]: c[2:] for c in cells}


def test_report_tables_metrics_and_params_changed_against_base(repo, tmp_path):
    proc = report(repo, tmp_path / "out", "--base", "main")
    text = (tmp_path / "out" / "report.md").read_text()
    assert proc.stdout.strip() == text.strip()  # also printed, for local runs
    assert "vs `main`" in text
    metrics = table(text, "Metrics")
    assert metrics == {"accuracy": ["0.9", "0.95", "0.05"], "errors": ["10", "5", "-5"]}
    assert table(text, "Params") == {"train.lr": ["0.1", "0.01"]}  # epochs did not change


def test_report_writes_the_plots_diff_with_both_revisions(repo, tmp_path):
    report(repo, tmp_path / "out", "--base", "main")
    page = (tmp_path / "out" / "plots" / "index.html").read_text()
    assert '"rev": "main"' in page and '"rev": "workspace"' in page
    assert '"0.51"' in page and '"0.42"' in page  # each revision's losses are drawn
    assert "plots/index.html" in (tmp_path / "out" / "report.md").read_text()


def test_report_says_so_when_nothing_changed(repo, tmp_path):
    report(repo, tmp_path / "out", "--base", "HEAD", "--no-plots")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "No metric changed." in text and "No parameter changed." in text
    assert "### Plots" not in text and not (tmp_path / "out" / "plots").exists()


def test_report_fails_on_an_unknown_base(repo, tmp_path):
    proc = report(repo, tmp_path / "out", "--base", "no-such-branch", "--no-plots", check=False)
    assert proc.returncode == 1
    assert "dvc metrics diff" in proc.stderr
    assert not (tmp_path / "out" / "report.md").exists()


def test_count_rows_ignores_header_and_rule():
    header = "| Path | Metric | main | workspace | Change |\n|---|---|---|---|---|\n"
    assert count_rows(header) == 0
    assert count_rows(header + "| m.json | acc | 0.9 | 0.95 | 0.05 |\n") == 1
    assert count_rows("") == 0


def test_workflow_runs_the_script_on_pull_requests():
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "pr-report.yml").read_text())
    on = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on:` key as True
    assert "pull_request" in on
    steps = [s for job in flow["jobs"].values() for s in job["steps"]]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # the base branch must be there to diff
    scripts = "\n".join(s.get("run", "") for s in steps)
    assert "make pr-report" in scripts and "gh pr comment" in scripts
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"] == "pr-report/plots"
    assert flow["permissions"]["pull-requests"] == "write"
