"""DVCLive for the training stages: per-epoch metrics and the final summary in
one folder that `dvc exp show`, `dvc metrics` and `dvc plots` read while the run trains."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dvclive import Live
from scmrepo.exceptions import SCMError

# What a training loop's epoch row holds that is plotted; timings stay out so that a rerun
# with the same result writes the same files.
EPOCH_KEYS = ("train_loss", "train_acc", "valid_loss", "valid_acc")


class _Live(Live):
    """DVCLive that also starts in a git repository with no commit yet (a new project's first
    `dvc repro`): dvclive 3.49 asks git for HEAD before it checks for commits, and raises."""

    def _init_dvc(self) -> None:
        try:
            super()._init_dvc()
        except SCMError:  # no commit: no experiment to tie the run to, the folder is written
            self._save_dvc_exp, self._dvc_file = False, "dvc.yaml"


def open_live(folder: Path) -> Live:
    """A DVCLive run in `folder`, its earlier files removed.

    The stages' dvc.yaml declares the folder's metrics and plots, so DVCLive writes no
    dvc.yaml of its own, no report and no experiment of its own (`dvc exp run` makes one).
    No params are logged: params.yaml is their one source, and `dvc exp show` reads it.
    """
    return _Live(str(folder), save_dvc_exp=False, dvcyaml=None, report=None)


def epoch_logger(live: Live, keys: tuple[str, ...] = EPOCH_KEYS) -> Callable[[dict], None]:
    """A callback for one epoch's row: its `keys` as DVCLive metrics, then the next step
    (which rewrites metrics.json, so `dvc exp show` follows the run)."""

    def log(row: dict) -> None:
        for key in keys:
            if key in row:
                live.log_metric(key, round(float(row[key]), 6))
        live.next_step()

    return log


def finish(live: Live, summary: Mapping[str, Any]) -> None:
    """End the run with `summary` as its metrics.json (plus DVCLive's last step)."""
    step = live.summary.get("step", 0)
    live.summary = {**summary, "step": step}
    live.end()
