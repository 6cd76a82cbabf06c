"""End-to-end `dvc repro` wall time and peak memory, as a new user would see them.

Clones the committed HEAD into a temporary folder with empty caches and runs the default
pipeline there one stage at a time (forced), in `dvc repro`'s own order, so each stage's
wall time and peak RSS are known; the total is the cold `dvc repro` a new user waits for. Then
`dvc repro -f` once more (warm: decoded images and backbone features cached). Needs
FACEMASK_MIRROR (or the web) for the archives.

    python benchmarks/repro_time.py            # cold per stage + warm total
    python benchmarks/repro_time.py --no-warm  # cold only
    python benchmarks/repro_time.py --no-warm --set recipe=fast  # conf/ composed with it first
    python benchmarks/repro_time.py --whole    # one cold `dvc repro`, as a user runs it
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GB of the largest process, output) via GNU time."""
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    h, m, s = (float(g) if g else 0.0 for g in wall.groups())
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return h * 3600 + m * 60 + s, rss / 2**20, proc.stdout


def duration(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def accuracy_line(clone: Path) -> str:
    """What the run's metrics/test.json says, as the summary lines print it."""
    test = json.loads((clone / "metrics" / "test.json").read_text())
    return f"test accuracy {test['accuracy']:.2%} (n={test['n']})"


def stage_order(clone: Path, env: dict) -> list[str]:
    """The stages `dvc repro` would run, in its order (a dry run executes nothing)."""
    out = subprocess.run(
        ["dvc", "repro", "--dry", "-f"], cwd=clone, env=env, capture_output=True, text=True
    ).stdout
    return re.findall(r"Running stage '([^']+)'", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-warm", action="store_true", help="skip the forced warm rerun")
    parser.add_argument(
        "--set", nargs="*", default=[], help="Hydra overrides composed into params.yaml first"
    )
    parser.add_argument(
        "--whole", action="store_true", help="time one cold `dvc repro` instead of each stage"
    )
    args = parser.parse_args()
    venv_bin = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "facemask"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
        ).stdout.strip()
        env = {
            **os.environ,
            "FACEMASK_CACHE": str(Path(tmp) / "cache"),
            "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
        }
        if args.set:
            facemask = venv_bin / "facemask"
            subprocess.run([facemask, "compose", *args.set], cwd=clone, env=env, check=True)
        preset = f", {' '.join(args.set)}" if args.set else ""
        if args.whole:
            # GNU time reports the largest process's peak: the heaviest stage's.
            wall, rss, _ = timed(["dvc", "repro"], clone, env)
            print(
                f"commit {commit}{preset}, one cold `dvc repro` (empty caches), "
                f"{os.cpu_count()} cores: {duration(wall)}, peak RSS {rss:.2f} GB, "
                f"{accuracy_line(clone)}"
            )
            return
        rows = []
        for stage in stage_order(clone, env):
            # Forced: a stage whose inputs came out byte-identical to the committed dvc.lock
            # would otherwise be skipped, and its cost would not show.
            wall, rss, _ = timed(["dvc", "repro", "-f", "--single-item", stage], clone, env)
            rows.append({"stage": stage, "wall (s)": round(wall, 1), "peak RSS (GB)": rss})
            print(rows[-1], file=sys.stderr, flush=True)
        table = pd.DataFrame(rows)
        cores = f"{os.cpu_count()} cores"
        print(f"commit {commit}{preset}, cold run stage by stage (empty caches), {cores}\n")
        print(table.to_markdown(index=False, floatfmt=".2f"))
        print(
            f"\ntotal {duration(table['wall (s)'].sum())}, peak RSS "
            f"{table['peak RSS (GB)'].max():.2f} GB, {accuracy_line(clone)}"
        )
        if not args.no_warm:
            wall, rss, _ = timed(["dvc", "repro", "-f"], clone, env)
            print(f"warm `dvc repro -f`: {duration(wall)}, peak RSS {rss:.2f} GB")


if __name__ == "__main__":
    main()
