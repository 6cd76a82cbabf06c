"""A pull request's DVC report: metrics and params changed against a base revision, as markdown.

    python scripts/pr_report.py --base main --out pr-report

writes pr-report/report.md (the comment the pr-report workflow posts) and
pr-report/plots/index.html (`dvc plots diff`, uploaded as an artefact). It compares the
workspace with BASE, as `dvc metrics diff BASE` does, so run `dvc repro` (or `dvc pull`)
first. Metrics and plots files must be in git (`cache: false`) for a fresh clone to diff
them without the remote. `make pr-report BASE=...` runs it locally.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def run_dvc(args: list[str], cwd: Path) -> str:
    """stdout of `dvc ARGS` run by this interpreter's DVC; a failure raises with its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def count_rows(table: str) -> int:
    """Data rows of a GFM table (DVC prints the header alone when nothing changed)."""
    return max(0, sum(line.startswith("|") for line in table.splitlines()) - 2)


def describe_head(cwd: Path) -> str:
    """Which code the report is about: HEAD's short hash, flagged when the tree is dirty."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=cwd,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{sha} + uncommitted changes" if dirty else sha


def artefact_link() -> str | None:
    """This Actions run's page, where its artefacts are listed; None outside GitHub Actions."""
    keys = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    if not all(os.environ.get(k) for k in keys):
        return None
    server, repo, run_id = (os.environ[k] for k in keys)
    return f"{server}/{repo}/actions/runs/{run_id}"


def build_report(base: str, plots_dir: Path | None, cwd: Path) -> str:
    """The markdown: one section each for metrics, params and (when written) plots."""
    metrics = run_dvc(["metrics", "diff", base, "--md"], cwd).strip()
    params = run_dvc(["params", "diff", base, "--md"], cwd).strip()
    lines = [f"## DVC report: `{describe_head(cwd)}` vs `{base}`", "", "### Metrics", ""]
    lines += [metrics if count_rows(metrics) else "No metric changed.", "", "### Params", ""]
    lines += [params if count_rows(params) else "No parameter changed.", ""]
    if plots_dir is not None:
        run_dvc(["plots", "diff", base, "--out", str(plots_dir)], cwd)
        where = artefact_link()
        lines += ["### Plots", ""]
        lines += [
            f"`dvc plots diff {base}`: {plots_dir.name}/index.html"
            + (f", in the `dvc-plots` artefact of [this run]({where})." if where else "."),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    parser.add_argument("--out", type=Path, default=Path("pr-report"), help="output folder")
    parser.add_argument("--no-plots", action="store_true", help="skip `dvc plots diff`")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="DVC repository")
    args = parser.parse_args(argv)
    out = args.out if args.out.is_absolute() else args.repo / args.out
    out.mkdir(parents=True, exist_ok=True)
    plots = None if args.no_plots else out / "plots"
    try:
        report = build_report(args.base, plots, args.repo)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    (out / "report.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
