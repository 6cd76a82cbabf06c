"""A sweep through DVC's experiment queue that waits, and fails when any experiment failed.

    python scripts/sweep.py -j 2 "model=resnet18,mobilenetv2_100" "train.image_size=160"

Each SETTING is one `dvc exp run --queue`, its words the `-S` overrides; DVC expands a
comma list into one experiment per value (a grid across the words), so the line above
queues three experiments. Then `dvc queue start -j JOBS`, a wait of at most --timeout
seconds, and a table of each experiment's state, the overridden params and --columns.
Exit status: 0 all succeeded, 1 any failed (its log tail goes to stderr), 124 timed out
(its unfinished experiments are killed and dequeued). `dvc exp run --run-all` exits 0 even
when an experiment failed, hence this wrapper. `make sweep SWEEP='...'` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_COLUMNS = "metrics/test.json:accuracy,metrics/test.json:errors"
QUEUED = re.compile(r"Queued experiment '([^']+)' for future execution")
FINISHED = {"success", "failed"}
TIMED_OUT = 124  # as coreutils' timeout(1)


def dvc_env() -> dict[str, str]:
    """This interpreter's bin first on PATH: the queue spawns its workers as plain `dvc`, and
    they run the stages' `python`; both must be this environment's."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run_dvc(
    args: list[str], cwd: Path, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess:
    """`dvc ARGS` by this interpreter's DVC. A failure, or a call still running after
    timeout seconds (killed then), raises with DVC's message, or with check=False returns
    a non-zero returncode.

    Output goes through files, not pipes: `dvc queue start` forks workers that inherit its
    stdout, and reading a pipe to its end would wait until the last worker exits.
    """
    cmd = [sys.executable, "-m", "dvc", *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            code = subprocess.run(
                cmd, cwd=cwd, env=dvc_env(), stdout=out, stderr=err, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
        out.seek(0)
        err.seek(0)
        proc = subprocess.CompletedProcess(
            cmd, -1 if code is None else code, out.read(), err.read()
        )
    if code is None:
        proc.stderr += f"\n(killed after {timeout:g} s)"
    if check and proc.returncode != 0:
        raise RuntimeError(f"dvc {shlex.join(args)} failed:\n{proc.stderr.strip()}")
    return proc


def queue_setting(setting: str, cwd: Path) -> list[str]:
    """Queue one setting's experiments; their names, as DVC reports them."""
    args = ["exp", "run", "--queue"]
    for override in shlex.split(setting):
        args += ["-S", override]
    proc = run_dvc(args, cwd)
    names = QUEUED.findall(proc.stdout + proc.stderr)
    if not names:
        raise RuntimeError(f"dvc queued nothing for {setting!r}:\n{proc.stdout}{proc.stderr}")
    return names


def read_states(status: str, names: list[str]) -> dict[str, str]:
    """{name: state} from `dvc queue status`: rows of task, name, created, status."""
    states = {}
    for line in status.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] in names:
            states[words[1]] = words[-1].lower()
    return states


def read_experiments(show: list[dict], names: list[str]) -> dict[str, dict]:
    """{name: {"params", "metrics"}} for the named experiments in `dvc exp show --json`."""
    found = {}
    for baseline in show:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            name = exp.get("name") or rev.get("name")
            if name not in names:
                continue
            data = rev.get("data") or {}
            state = (exp.get("executor") or {}).get("state")
            # A failed run's commit still holds its baseline's metrics files: not its own.
            metrics = (data.get("metrics") or {}) if state == "success" else {}
            found[name] = {
                "params": {f: v.get("data", {}) for f, v in (data.get("params") or {}).items()},
                "metrics": {f: v.get("data", {}) for f, v in metrics.items()},
            }
    return found


def lookup(column: str, exp: dict) -> object:
    """A column's value: FILE:dotted.key, or a dotted key looked up in params, then metrics."""
    path, _, key = column.rpartition(":")
    for kind in ("params", "metrics"):
        for file, values in exp[kind].items():
            if path and file != path:
                continue
            value = values
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                return value
    return None


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def format_value(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def overridden_keys(settings: list[str]) -> list[str]:
    """The params a sweep changes, in order: the column a reader looks for first."""
    keys = [o.split("=", 1)[0].lstrip("+~") for s in settings for o in shlex.split(s)]
    return list(dict.fromkeys(keys))


def wait_for(names: list[str], cwd: Path, timeout: float, poll: float):
    """Poll `dvc queue status` until every named experiment finished or timeout passed.

    Not `dvc exp show`: while an experiment runs it reads the run's temporary workspace,
    and in DVC 3.67 it once hung there for good (and `dvc exp run --run-all` exits 0 even
    when an experiment failed, so neither replaces this loop).
    """
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while True:
        proc = run_dvc(["queue", "status"], cwd, timeout=60, check=False)
        if proc.returncode == 0:
            states = read_states(proc.stdout, names)
        else:
            print(f"dvc queue status failed, retrying: {proc.stderr.strip()}", file=sys.stderr)
        done = all(states.get(n) in FINISHED for n in names)
        if done or time.monotonic() >= deadline:
            return states, done
        time.sleep(poll)


def stop_unfinished(names: list[str], states: dict[str, str], cwd: Path, grace: float = 60):
    """Dequeue the waiting, interrupt the running, until none of the sweep is left; the
    states after (interrupted runs as "killed", dequeued ones as "removed").

    One name per `dvc queue remove` (it refuses the whole list when one has started), and
    `dvc queue kill` without --force: --force ends DVC's runner but leaves the stage's own
    process running, orphaned. Whatever still runs after `grace` seconds gets --force.
    """
    deadline = time.monotonic() + grace
    interrupted: set[str] = set()
    while True:
        for name in names:
            if states.get(name) == "queued":
                run_dvc(["queue", "remove", name], cwd, timeout=60, check=False)
        force = time.monotonic() >= deadline
        running = [n for n in names if states.get(n) == "running"]
        running = [n for n in running if force or n not in interrupted]
        if running:
            run_dvc(["queue", "kill", *(["--force"] if force else []), *running], cwd, 60, False)
            interrupted.update(running)
        proc = run_dvc(["queue", "status"], cwd, timeout=60, check=False)
        if proc.returncode == 0:
            states = {n: "removed" for n in names} | read_states(proc.stdout, names)
        if not any(states.get(n) in ("queued", "running") for n in names) or force:
            # DVC files an interrupted run as failed; say who stopped it.
            return {
                n: "killed" if n in interrupted and st == "failed" else st
                for n, st in states.items()
            }
        time.sleep(1)


def report_failure(name: str, cwd: Path, lines: int = 15) -> None:
    logs = run_dvc(["queue", "logs", name], cwd, check=False)
    tail = "\n".join((logs.stdout + logs.stderr).splitlines()[-lines:])
    print(f"--- {name} failed; last lines of `dvc queue logs {name}`:\n{tail}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("settings", nargs="+", metavar="SETTING", help="-S overrides, quoted")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="experiments at once")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds, all in all")
    parser.add_argument("--poll", type=float, default=10, help="seconds between checks")
    parser.add_argument("--columns", default=DEFAULT_COLUMNS, help="FILE:key or key, by commas")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="DVC repository")
    args = parser.parse_args(argv)
    cwd = args.repo
    baseline = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()
    names: list[str] = []
    try:
        for setting in args.settings:
            names += queue_setting(setting, cwd)
        run_dvc(["queue", "start", "--jobs", str(args.jobs)], cwd)
    except RuntimeError as err:
        if names:  # a half-queued sweep would run on the next `dvc queue start`
            run_dvc(["queue", "remove", *names], cwd, check=False)
        print(err, file=sys.stderr)
        return 1
    print(f"queued {len(names)}: {' '.join(names)}; waiting (at most {args.timeout:g} s)")
    states, done = wait_for(names, cwd, args.timeout, args.poll)
    if not done:
        states = stop_unfinished(names, states, cwd)
    show = run_dvc(["exp", "show", "--json", "--rev", baseline], cwd, timeout=60, check=False)
    exps = read_experiments(json.loads(show.stdout), names) if show.returncode == 0 else {}
    if show.returncode != 0:
        print(f"dvc exp show failed: {show.stderr.strip()}", file=sys.stderr)
    columns = overridden_keys(args.settings) + [c for c in args.columns.split(",") if c]
    rows = [["experiment", "state", *columns]]
    for name in names:
        exp = exps.get(name, {"params": {}, "metrics": {}})
        cells = (format_value(lookup(c, exp)) for c in columns)
        rows.append([name, states.get(name, "missing"), *cells])
    print(format_table(rows))
    for name in names:
        if states.get(name) == "failed":
            report_failure(name, cwd)
    if not done:
        print(f"timed out after {args.timeout:g} s", file=sys.stderr)
    return exit_code(states, names, done)


def exit_code(states: dict[str, str], names: list[str], done: bool) -> int:
    """0 only when every experiment succeeded; a timeout outranks a failure."""
    if not done:
        return TIMED_OUT
    return 0 if all(states.get(n) == "success" for n in names) else 1


if __name__ == "__main__":
    sys.exit(main())
