"""DVCLive for the training stages: per-epoch metrics, the params and the final summary in
one folder that `dvc exp show`, `dvc metrics` and `dvc plots` read while the run trains."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dvclive import Live
from pydantic import BaseModel
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


def open_live(folder: Path, params: Mapping[str, Any]) -> Live:
    """A DVCLive run in `folder`, its earlier files removed, `params` logged.

    The stages' dvc.yaml declares the folder's metrics and plots, so DVCLive writes no
    dvc.yaml of its own, no report and no experiment of its own (`dvc exp run` makes one).
    """
    live = _Live(str(folder), save_dvc_exp=False, dvcyaml=None, report=None)
    # Typed sections (pydantic) as the plain values params.yaml holds.
    live.log_params({k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
                     for k, v in params.items()})  # fmt: skip
    return live


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
