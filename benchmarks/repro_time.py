"""End-to-end `dvc repro` wall time and peak memory, as a new user would see them.

Clones the committed HEAD into a temporary folder with empty caches and runs the default
pipeline there, so the figures are those of a fresh clone. `--whole` times one cold `dvc
repro` per variant (the default, and e.g. `recipe=fast`: Hydra overrides composed into
params.yaml first), one fresh clone each, and writes one row per variant to
benchmarks/results/repro_time.md (docs/speed.md shows it). Without `--whole` it runs every
stage forced, one at a time in `dvc repro`'s order, so each stage's wall time and peak RSS
are known, then `dvc repro -f` once more (warm). Needs FACEMASK_MIRROR (or the web).

    python benchmarks/repro_time.py --whole --variants default recipe=fast
    python benchmarks/repro_time.py            # cold per stage + warm total (prints)
    python benchmarks/repro_time.py --no-warm  # cold only
    python benchmarks/repro_time.py --smoke    # a two-stage DVC repo made in a temp folder
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
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "repro_time.md"
HEADER = (
    "One cold `dvc repro` as a user runs it (`python benchmarks/repro_time.py --whole`): a fresh "
    "clone of the committed HEAD, empty caches, all stages in one DVC process; GNU time: wall "
    "clock and the largest process's peak RSS (GB here are GiB, kB / 2^20); {cores} cores, "
    "nothing else running."
)


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


def accuracy_cell(clone: Path) -> str:
    """What the run's metrics/test.json says."""
    test = json.loads((clone / "metrics" / "test.json").read_text())
    return f"{100 * test['accuracy']:.2f} % (n={test['n']})"


def stage_order(clone: Path, env: dict) -> list[str]:
    """The stages `dvc repro` would run, in its order (a dry run executes nothing)."""
    proc = subprocess.run(
        ["dvc", "repro", "--dry", "-f"], cwd=clone, env=env, capture_output=True, text=True
    )
    stages = re.findall(r"Running stage '([^']+)'", proc.stdout)
    if proc.returncode or not stages:
        sys.exit(f"dvc repro --dry found no stages:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return stages


def fresh_clone(repo: Path, tmp: Path, overrides: list[str]) -> tuple[Path, str, dict]:
    """A clone of `repo`'s HEAD with its own empty caches, params composed with `overrides`."""
    clone = tmp / "facemask"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
    ).stdout.strip()
    env = {**os.environ, "FACEMASK_CACHE": str(tmp / "cache")}
    if overrides:
        subprocess.run(["facemask", "compose", *overrides], cwd=clone, env=env, check=True)
    return clone, commit, env


LOCKS = ("dvc.lock", "tasks/dvc.lock")  # what `dvc repro` writes: the default and its @binary


def reports(clone: Path) -> set[str]:
    """Outputs kept out of the cache (`cache: false`): reports, which hold timings."""
    from dvc.repo import Repo

    with Repo(str(clone)) as repo:
        return {o.def_path for st in repo.index.stages for o in st.outs if not o.use_cache}


def outputs_as_committed(clone: Path) -> str:
    """How many stages' cached outputs (data, models) came out byte-identical to the committed
    locks; reports (`cache: false`) are left out, since they hold timings."""
    import yaml

    before, after = {}, {}
    for lock in LOCKS:
        shown = subprocess.run(
            ["git", "show", f"HEAD:{lock}"], cwd=clone, capture_output=True, text=True
        )
        if shown.returncode:  # a repo without that pipeline
            continue
        before |= yaml.safe_load(shown.stdout)["stages"]
        after |= yaml.safe_load((clone / lock).read_text())["stages"]
    if not before:
        return "no committed lock"
    skip = reports(clone)
    outs = lambda e: {o["path"]: o.get("md5") for o in e.get("outs", []) if o["path"] not in skip}  # noqa: E731
    # stages whose outputs are all reports say nothing either way; other tasks never ran here
    cached = [k for k in after if k in before and outs(before[k]) and "@three_class" not in k]
    differ = sorted(k for k in cached if outs(after[k]) != outs(before[k]))
    same = len(cached) - len(differ)
    return f"{same} equal" + (f", differ: {' '.join(differ)}" if differ else "")


def time_whole(repo: Path, variants: list[str], keep: Path | None = None) -> list[dict]:
    """One cold `dvc repro` per variant ("default" or space-separated overrides); `keep`: the
    folder the last variant's clone is left in (its models, for the serving benchmarks)."""
    rows = []
    for variant in variants:
        overrides = [] if variant == "default" else variant.split()
        with tempfile.TemporaryDirectory() as tmp:
            where = Path(tmp) if keep is None else keep
            clone, commit, env = fresh_clone(repo, where, overrides)
            wall, rss, _ = timed(["dvc", "repro"], clone, env)  # GNU time: the largest process
            what = "`--whole`" + (f" `--variants {variant}`" if overrides else ": the default")
            rows.append(
                {"what": what, "commit": commit, "wall": duration(wall),
                 "peak RSS": f"{rss:.2f} GB", "test accuracy": accuracy_cell(clone),
                 "stages' data and models vs the committed lock": outputs_as_committed(clone)}
            )  # fmt: skip
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def time_stages(repo: Path, overrides: list[str], warm: bool) -> str:
    """Every stage forced, one `dvc repro` each; then, if `warm`, `dvc repro -f` once more."""
    with tempfile.TemporaryDirectory() as tmp:
        clone, commit, env = fresh_clone(repo, Path(tmp), overrides)
        rows = []
        for stage in stage_order(clone, env):
            # Forced: a stage whose inputs came out byte-identical to the committed dvc.lock
            # would otherwise be skipped, and its cost would not show.
            wall, rss, _ = timed(["dvc", "repro", "-f", "--single-item", stage], clone, env)
            rows.append({"stage": stage, "wall (s)": round(wall, 1), "peak RSS (GB)": rss})
            print(rows[-1], file=sys.stderr, flush=True)
        table = pd.DataFrame(rows)
        preset = f", {' '.join(overrides)}" if overrides else ""
        lines = [
            f"commit {commit}{preset}, cold run stage by stage (empty caches), "
            f"{os.cpu_count()} cores",
            "",
            table.to_markdown(index=False, floatfmt=".2f"),
            "",
            f"total {duration(table['wall (s)'].sum())}, peak RSS "
            f"{table['peak RSS (GB)'].max():.2f} GB, test accuracy {accuracy_cell(clone)}",
        ]
        if warm:
            wall, rss, _ = timed(["dvc", "repro", "-f"], clone, env)
            lines.append(f"warm `dvc repro -f`: {duration(wall)}, peak RSS {rss:.2f} GB")
    return "\n".join(lines)


def whole_report(rows: list[dict]) -> str:
    return "\n".join(
        [HEADER.format(cores=os.cpu_count()), "", pd.DataFrame(rows).to_markdown(index=False)]
    )


def make_smoke_repo(folder: Path) -> Path:
    """A git + DVC repository of two stages that write metrics/test.json, run and committed
    with its lock."""
    repo = folder / "repo"
    repo.mkdir()
    evaluate = (
        "import json, os; os.makedirs('metrics', exist_ok=True); "
        "v = open('data.txt').read().split(); "
        "json.dump({'accuracy': v.count('1') / len(v), 'n': len(v)}, "
        "open('metrics/test.json', 'w'))"
    )
    stages = {
        "noise": {  # a stage that cannot repeat: its output differs from the committed one
            "cmd": "python -c \"import os; open('noise.bin', 'wb').write(os.urandom(8))\"",
            "outs": ["noise.bin"],
        },
        "make_data": {
            "cmd": "python -c \"open('data.txt', 'w').write('1 0 1 1')\"",
            "outs": ["data.txt"],
        },
        "evaluate": {
            "cmd": f'python -c "{evaluate}"',
            "deps": ["data.txt"],
            "metrics": [{"metrics/test.json": {"cache": False}}],
        },
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    git = ["git", "-c", "user.name=smoke", "-c", "user.email=smoke@example.invalid"]
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"],
                [*git, "add", "-A"], [*git, "commit", "-q", "-m", "smoke"]):  # fmt: skip
        subprocess.run(cmd, cwd=repo, check=True)
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-warm", action="store_true", help="skip the forced warm rerun")
    parser.add_argument(
        "--set", nargs="*", default=[], help="per stage: Hydra overrides composed first"
    )
    parser.add_argument(
        "--whole", action="store_true", help="time one cold `dvc repro` per variant"
    )
    parser.add_argument(
        "--variants", nargs="+", default=["default"],
        help="with --whole: 'default' or quoted overrides, e.g. 'recipe=fast'",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=OUT, help="with --whole: the file to write")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository to clone")
    parser.add_argument("--keep", type=Path, help="with --whole: leave the clone in this folder")
    parser.add_argument(
        "--smoke", action="store_true", help="both modes on a tiny repo made in a temp folder"
    )
    args = parser.parse_args()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    # this interpreter's `dvc`, `facemask` and `python`, activated or not
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    if args.smoke:
        tmp = Path(tempfile.mkdtemp(prefix="repro_time_"))
        args.repo = make_smoke_repo(tmp)
        if args.out == OUT:  # never over the recorded result
            args.out = tmp / OUT.name
        print(time_stages(args.repo, [], warm=True))
        args.whole = True
    if args.whole:
        report = whole_report(time_whole(args.repo, args.variants, args.keep))
        args.out.write_text(report + "\n")
        print(f"{report}\nwritten to {args.out}")
        return
    print(time_stages(args.repo, args.set, warm=not args.no_warm))


if __name__ == "__main__":
    main()
