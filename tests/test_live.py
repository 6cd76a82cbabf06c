"""The training stages' DVCLive folder (facemask.training.live), in a new project's git
repository that has no commit yet, as a first `dvc repro` meets it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from facemask.training.live import epoch_logger, finish, open_live


def test_a_repository_without_a_commit_still_gets_the_folder(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    live = open_live(Path("m"))
    log = epoch_logger(live)
    log({"train_loss": 0.5, "valid_loss": 0.4, "seconds": 3.0})
    log({"train_loss": 0.3, "valid_loss": 0.35, "seconds": 3.0})
    finish(live, {"best_valid_loss": 0.35})
    assert json.loads(Path("m/metrics.json").read_text()) == {"best_valid_loss": 0.35, "step": 1}
    assert Path("m/plots/metrics/valid_loss.tsv").read_text().split() == [
        "step", "valid_loss", "0", "0.4", "1", "0.35"
    ]  # fmt: skip
    assert not Path("m/plots/metrics/seconds.tsv").exists()  # timings are not plotted
    assert not Path("dvc.yaml").exists() and not Path("m/dvc.yaml").exists()
