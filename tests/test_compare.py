"""The comparison stage: k-fold CV over a grid, a leaderboard, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from PIL import Image

from facemask.config import facemask_imports
from facemask.models.predict import EAGER_ENV
from facemask.params import Params
from facemask.training import compare as compare_lib
from facemask.training.compare import Config, fold_key, make_grid
from facemask.training.leaderboard import COLORS, draw_board, summarize, to_markdown
from stages import compare
from tests.conftest import run_data_stages, train_params


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
    # Eager inference: on 32 px and a dozen pictures a fold, tracing each fold's model
    # (fast_forward) costs more than it saves, half this test's time; the traced path has
    # its own tests (test_fast_forward.py) and answers as eager does (1e-4 there).
    monkeypatch.setenv(EAGER_ENV, "1")
    run_data_stages(params)
    params["cv"] = {"folds": 2}
    params["compare"] = {
        "models": ["facemask_cnn", "mobilenetv2_100"],
        "weights": ["pretrained", "scratch"],
        "modes": ["frozen", "finetune"],
        "image_size": 32,
        "finetune_epochs": 1,
        "repeats": 1,
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
    with Image.open("leaderboard/accuracy_vs_latency.png") as im:  # 8 x 5.5 in at 110 dpi
        assert im.size == (880, 605)

    # A second run finds every fold done and trains nothing.
    def boom(*a, **k):
        raise AssertionError("should have resumed from the finished folds")

    run_fold = compare_lib.run_fold
    monkeypatch.setattr(compare_lib, "run_fold", boom)
    again = compare.main(params, Path("data/splits"), Path("leaderboard2"))
    pd.testing.assert_series_equal(again["accuracy_mean"], board["accuracy_mean"])

    # A model added to the grid trains alone; the finished folds of the others still count.
    trained = []

    def spy(cfg, *args, **kwargs):
        trained.append(cfg.name)
        return run_fold(cfg, *args, **kwargs)

    monkeypatch.setattr(compare_lib, "run_fold", spy)
    params["compare"]["models"].append("resnet18")
    params["compare"]["modes"] = ["frozen"]
    grown = compare.main(params, Path("data/splits"), Path("leaderboard3"))
    assert trained == ["resnet18/scratch/frozen"] * 2
    assert len(grown) == 4  # the grid is the frozen configs only now

    # Another section's grid reuses finished folds; a second repeat redraws the folds.
    trained.clear()
    params["compare_joined"] = {**params["compare"], "models": ["facemask_cnn"], "repeats": 2}
    extra = compare.main(
        params, Path("data/splits"), Path("leaderboard4"), section="compare_joined"
    )
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


def fold_params(**train) -> Params:
    grid = {"image_size": 32, "finetune_epochs": 1, "models": ["m"], "weights": ["scratch"],
            "modes": ["frozen"], "repeats": 1}  # fmt: skip
    return Params(
        seed=0,
        classes=["x", "y"],
        train=train_params(**train),
        cv={"folds": 2},
        compare=grid,
    )


def test_fold_key_changes_with_what_shapes_a_fold_and_only_that(monkeypatch):
    dev = pd.DataFrame({"sha256": ["s1", "s2"], "label": ["x", "y"], "group": [0, 1]})
    params = fold_params()
    key = fold_key(params, "m/scratch/frozen", 0, dev)
    assert key == fold_key(fold_params(), "m/scratch/frozen", 0, dev)
    grown = params.compare.model_copy(update={"models": ["m", "n"]})
    grown = params.model_copy(update={"compare": grown})  # a grown grid keeps finished folds
    assert fold_key(grown, "m/scratch/frozen", 0, dev) == key
    changed = [
        fold_key(params, "m/scratch/finetune", 0, dev),
        fold_key(params, "m/scratch/frozen", 1, dev),
        fold_key(params, "m/scratch/frozen", 0, dev, repeat=1),
        fold_key(params, "m/scratch/frozen", 0, dev.assign(label=["y", "x"])),
        fold_key(fold_params(batch_size=3), "m/scratch/frozen", 0, dev),
    ]
    assert key not in changed and len(set(changed)) == len(changed)
    # Other code, other key: the fold cache is keyed by the code that computes a fold ...
    monkeypatch.setattr(compare_lib, "code_fingerprint", lambda *modules: "other code")
    assert fold_key(fold_params(), "m/scratch/frozen", 0, dev) != key


def test_fold_cache_covers_training_code_but_not_the_leaderboard():
    # ... which is everything a fold runs (code_fingerprint walks these imports), and not
    # how the leaderboard ranks or draws the results.
    reached = facemask_imports("facemask.training.compare")
    assert {"facemask.training.train", "facemask.training.features"} <= reached
    assert {"facemask.models.factory", "facemask.evaluation.metrics"} <= reached
    assert "facemask.training.leaderboard" not in reached


def board_frame() -> pd.DataFrame:
    board = pd.DataFrame(
        {
            "model": ["m1", "m1", "m1", "m2"],
            "weights": ["pretrained", "pretrained", "scratch", "pretrained"],
            "mode": ["frozen", "finetune", "frozen", "frozen"],
            "accuracy_mean": [0.90, 0.92, 0.80, 0.95],
            "accuracy_std": [0.01, 0.02, 0.03, 0.01],
            "macro_f1_mean": [0.9, 0.91, 0.7, 0.94],
            "macro_f1_std": [0.01] * 4,
            "errors": [10, 8, 20, 5],
            "n": [100] * 4,
            "latency_ms": [2.0, 2.0, 2.0, 10.0],
            "params_m": [1.0, 1.0, 1.0, 5.0],
            "train_seconds": [3.0] * 4,
        }
    )
    board.insert(0, "config", board["model"] + "/" + board["weights"] + "/" + board["mode"])
    return board


def test_board_plot_puts_each_configuration_at_its_latency_and_accuracy():
    fig = draw_board(board_frame())
    try:
        ax = fig.axes[0]
        dots = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
        got = sorted(
            (*map(float, c.get_offsets()[0]), to_hex(c.get_facecolor()[0]), float(c.get_sizes()[0]))
            for c in dots
        )
        blue, orange = to_hex(COLORS["pretrained"]), to_hex(COLORS["scratch"])
        assert got == [
            (2.0, 0.80, orange, 55.0),  # marker area 30 + 25 per million parameters
            (2.0, 0.90, blue, 55.0),
            (2.0, 0.92, blue, 55.0),
            (10.0, 0.95, blue, 155.0),
        ]
        # One name per model and weights, at its best configuration.
        labels = sorted((t.get_text(), *t.xy) for t in ax.texts)
        assert labels == [("m1", 2.0, 0.8), ("m1", 2.0, 0.92), ("m2", 10.0, 0.95)]
        assert ax.get_xscale() == "log"
    finally:
        plt.close(fig)


def test_markdown_ranks_best_mean_accuracy_first():
    lines = to_markdown(board_frame()).splitlines()[2:]
    assert [line.split("|")[1].strip() for line in lines] == ["m2", "m1", "m1", "m1"]
    assert "92.00% ± 2.00%" in lines[1] and "8 / 100" in lines[1]
