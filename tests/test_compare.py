"""The comparison stage: k-fold CV over a grid, a leaderboard, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from facemask.training import compare as compare_lib
from facemask.training.compare import Config, make_grid, summarize
from stages import compare
from tests.conftest import run_data_stages


def test_grid_skips_what_cannot_be_pretrained_offline():
    grid, skipped = make_grid(
        ["mobilenetv2_100", "resnet18", "facemask_cnn"], ["pretrained", "scratch"], ["frozen"]
    )
    names = {c.name for c in grid}
    assert "mobilenetv2_100/pretrained/frozen" in names
    assert "resnet18/scratch/frozen" in names and "facemask_cnn/scratch/frozen" in names
    reasons = {c.name: why for c, why in skipped}
    assert "offline" in reasons["resnet18/pretrained/frozen"]
    assert "no published" in reasons["facemask_cnn/pretrained/frozen"]


def test_grid_pretrains_joined_backbones_only_when_every_member_can_be():
    joined = ["mobilenetv2_100+tf_efficientnet_lite0", "mobilenetv2_100+resnet34"]
    grid, skipped = make_grid(joined, ["pretrained"], ["frozen"])
    assert [c.name for c in grid] == ["mobilenetv2_100+tf_efficientnet_lite0/pretrained/frozen"]
    assert (
        "offline"
        in dict((c.name, w) for c, w in skipped)["mobilenetv2_100+resnet34/pretrained/frozen"]
    )
    _, skipped = make_grid(["mobilenetv2_100+facemask_cnn"], ["pretrained"], ["frozen"])
    assert "no published" in skipped[0][1]


def test_summarize_gives_mean_and_std_per_config():
    folds = pd.DataFrame(
        {
            "config": ["a"] * 3 + ["b"] * 3,
            "model": ["m"] * 6,
            "weights": ["w"] * 6,
            "mode": ["frozen"] * 6,
            "fold": [0, 1, 2] * 2,
            "train_seconds": [1.0] * 6,
            "accuracy": [0.9, 1.0, 0.95, 0.5, 0.5, 0.5],
            "macro_f1": [0.8] * 6,
            "n": [10, 10, 20, 4, 4, 4],
        }
    )
    board = summarize(folds).set_index("config")
    assert board.loc["a", "errors"] == 1 + 0 + 1 and board.loc["a", "n"] == 40
    assert board.loc["b", "errors"] == 6
    assert board.loc["a", "accuracy_mean"] == pytest.approx(0.95)
    assert board.loc["a", "accuracy_std"] == pytest.approx(0.05)
    assert board.loc["b", "accuracy_std"] == 0 and board.loc["a", "folds"] == 3


@pytest.mark.slow
def test_compare_stage_cross_validates_and_resumes(tmp_path, monkeypatch, params):
    monkeypatch.chdir(tmp_path)
    run_data_stages(params)
    params["cv"] = {"folds": 2}
    params["compare"] = {
        "models": ["facemask_cnn", "mobilenetv2_100"],
        "weights": ["pretrained", "scratch"],
        "modes": ["frozen", "finetune"],
        "image_size": 32,
        "finetune_epochs": 1,
    }
    board = compare.main(params, Path("data/splits"), Path("leaderboard"))

    assert set(board["config"]) == {
        "facemask_cnn/scratch/frozen",
        "facemask_cnn/scratch/finetune",
        "mobilenetv2_100/pretrained/frozen",
        "mobilenetv2_100/pretrained/finetune",
        "mobilenetv2_100/scratch/frozen",
        "mobilenetv2_100/scratch/finetune",
    }
    folds = pd.read_csv("leaderboard/folds.csv")
    assert len(folds) == 6 * 2 and set(folds["fold"]) == {0, 1}
    # every fold is evaluated on a different held-out part; together they cover dev
    n_dev = sum(len(pd.read_csv(f"data/splits/{s}.csv")) for s in ("train", "valid"))
    per_config = folds.groupby("config")["n"].sum()
    assert (per_config == n_dev).all()
    assert board["accuracy_std"].notna().all() and (board["latency_ms"] > 0).all()
    metrics = json.loads(Path("leaderboard/leaderboard.json").read_text())
    assert set(metrics) == set(board["config"])
    assert "± " in Path("leaderboard/leaderboard.md").read_text()
    assert Path("leaderboard/accuracy_vs_latency.png").stat().st_size > 10_000

    # A second run finds every fold done and trains nothing.
    def boom(*a, **k):
        raise AssertionError("should have resumed from the finished folds")

    run_fold = compare.run_fold
    monkeypatch.setattr(compare, "run_fold", boom)
    again = compare.main(params, Path("data/splits"), Path("leaderboard2"))
    pd.testing.assert_series_equal(again["accuracy_mean"], board["accuracy_mean"])

    # A model added to the grid trains alone; the finished folds of the others still count.
    trained = []

    def spy(cfg, *args, **kwargs):
        trained.append(cfg.name)
        return run_fold(cfg, *args, **kwargs)

    monkeypatch.setattr(compare, "run_fold", spy)
    params["compare"]["models"].append("resnet18")
    params["compare"]["modes"] = ["frozen"]
    grown = compare.main(params, Path("data/splits"), Path("leaderboard3"))
    assert trained == ["resnet18/scratch/frozen"] * 2
    assert len(grown) == 4  # the grid is the frozen configs only now

    # Another section's grid reuses finished folds; a second repeat redraws the folds.
    trained.clear()
    params["extra"] = {**params["compare"], "models": ["facemask_cnn"], "repeats": 2}
    extra = compare.main(params, Path("data/splits"), Path("leaderboard4"), section="extra")
    assert trained == ["facemask_cnn/scratch/frozen"] * 2  # repeat 1 only
    folds4 = pd.read_csv("leaderboard4/folds.csv")
    assert sorted(set(folds4["repeat"])) == [0, 1] and extra.loc[0, "folds"] == 4
    assert extra.loc[0, "n"] == 2 * n_dev


def test_config_name():
    assert Config("m", "scratch", "frozen").name == "m/scratch/frozen"
    assert compare_lib.offline_weights("mobilenetv2_100")


def test_cv_never_holds_out_rows_pinned_to_train():
    n = 60
    df = pd.DataFrame(
        {
            "label": ["a", "b"] * (n // 2),
            "group": [*range(n - 2), 0, 1],  # the last two share groups 0 and 1
            "fixed_split": ["train"] * 10 + [""] * (n - 12) + ["", ""],
        }
    )
    folds = compare_lib.cv_folds(df, 5, seed=0)
    pinned = df["group"].isin(range(10)).to_numpy()  # pinned rows and their group mates
    assert (folds[pinned] == -1).all()
    assert sorted(set(folds[~pinned])) == [0, 1, 2, 3, 4]
    inner = compare_lib.inner_split(df, seed=0, fraction=0.2)
    assert inner.any() and not inner[pinned].any()
