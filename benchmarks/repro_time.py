"""End-to-end `dvc repro` wall time and peak memory, as a new user would see them.

Clones the committed HEAD into a temporary folder, then runs the whole pipeline there
with empty caches (cold: archive -> plots) and again with `-f` (warm: decoded images and
backbone features cached). Needs FACEMASK_MIRROR (or the web) for the archive.

    python benchmarks/repro_time.py
"""

from __future__ import annotations

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


def main() -> None:
    venv_bin = Path(sys.executable).parent
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "facemask"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {
            **os.environ,
            "FACEMASK_CACHE": str(Path(tmp) / "cache"),
            "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
        }
        for label, cmd in (
            ("cold: empty caches", ["dvc", "repro"]),
            ("warm: caches filled", ["dvc", "repro", "-f"]),
        ):
            wall, rss, _ = timed(cmd, clone, env)
            test = json.loads((clone / "metrics" / "test.json").read_text())
            train = json.loads((clone / "metrics" / "train.json").read_text())
            rows.append(
                {
                    "run": label,
                    "wall": f"{int(wall // 60)} min {wall % 60:.0f} s",
                    "peak RSS (GB)": f"{rss:.1f}",
                    "test accuracy": f"{test['accuracy']:.2%}",
                    "test n": test["n"],
                    "train stage (s)": train["seconds"]["total"],
                }
            )
            print(rows[-1], file=sys.stderr)
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
