"""Slices: buckets, image measures, per-slice accuracy with intervals, the worst slice."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from facemask.evaluation.slices import add_slices, image_measures, slice_summary, slice_table


def predictions(groups: dict[str, tuple[int, float]], seed: int = 0) -> pd.DataFrame:
    """Rows per group (n, accuracy): exact accuracy, both classes, errors spread out."""
    rng = np.random.default_rng(seed)
    parts = []
    for g, (n, acc) in groups.items():
        label = np.array(["with_mask", "without_mask"])[np.arange(n) % 2]
        right = rng.permutation(np.arange(n) < round(n * acc))
        other = np.where(label == "with_mask", "without_mask", "with_mask")
        parts.append(pd.DataFrame({"group": g, "label": label, "predicted": label}))
        parts[-1]["predicted"] = np.where(right, label, other)
    return pd.concat(parts, ignore_index=True)


def test_face_size_buckets_at_the_edges():
    sides = [31, 32, 63, 64, 127, 128, 500]
    df = pd.DataFrame({"width": sides, "height": [1000] * len(sides)})
    want = ["<32", "32-64", "32-64", "64-128", "64-128", ">=128", ">=128"]
    assert add_slices(df, None)["face_size"].astype(str).tolist() == want
    # The short side decides, whichever it is; a missing size is "unknown".
    tall = pd.DataFrame({"width": [200, 200, np.nan], "height": [40, 300, 50]})
    assert add_slices(tall, None)["face_size"].astype(str).tolist() == [
        "32-64",
        ">=128",
        "unknown",
    ]


def test_image_measures_flat_grey_vs_noisy_colour():
    rng = np.random.default_rng(0)
    flat = np.full((1, 64, 64, 3), 128, np.uint8)
    noisy = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    m = image_measures(np.concatenate([flat, noisy]))
    assert list(m.columns) == ["brightness", "blur", "grayscale"]
    assert m["brightness"][0] == pytest.approx(128, abs=0.5)
    assert m["blur"][0] == pytest.approx(0, abs=1e-6)
    assert m["grayscale"].tolist() == [True, False]
    assert m["blur"][1] > 1000
    # A grey picture stored as RGB (equal channels) with detail is grey, and not blurry.
    grey = np.repeat(noisy[..., :1], 3, axis=-1)
    g = image_measures(grey)
    assert g["grayscale"][0] and g["blur"][0] > 1000


def test_blur_is_the_variance_of_the_laplacian_by_hand():
    dot = np.zeros((1, 5, 5, 3), np.uint8)
    dot[0, 2, 2] = 100
    # Laplacian over the 3x3 interior: -400 at the dot, +100 at its 4 neighbours, 0 elsewhere.
    want = np.var([-400, 100, 100, 100, 100, 0, 0, 0, 0])
    assert image_measures(dot)["blur"][0] == pytest.approx(want, rel=1e-4)
    assert image_measures(dot)["brightness"][0] == pytest.approx(100 / 25, rel=1e-4)


def test_image_measures_in_batches_match_one_by_one():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)  # more than one chunk
    whole = image_measures(images)
    assert len(whole) == 300
    pd.testing.assert_frame_equal(
        whole.iloc[[0, 299]].reset_index(drop=True),
        pd.concat([image_measures(images[[0]]), image_measures(images[[299]])], ignore_index=True),
    )


def test_image_measures_is_fast_on_a_few_thousand_model_inputs():
    images = np.random.default_rng(0).integers(0, 256, (200, 224, 224, 3), dtype=np.uint8)
    start = time.perf_counter()
    image_measures(images)
    assert time.perf_counter() - start < 5  # ~0.3 s here: vectorised, not a pixel loop


def test_light_blur_and_colour_buckets():
    dark = np.full((1, 32, 32, 3), 40, np.uint8)
    bright = np.full((1, 32, 32, 3), 220, np.uint8)
    sharp = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    m = image_measures(np.concatenate([dark, bright, sharp]))
    out = add_slices(pd.DataFrame({"x": [0, 1, 2]}, index=[7, 8, 9]), m)
    assert out["brightness"].astype(str).tolist() == ["dark (<70)", "bright (>185)", "normal"]
    assert out["blur"].astype(str).tolist() == ["blurry (<55)", "blurry (<55)", "sharp (>=200)"]
    assert out["colour"].tolist() == ["grayscale", "grayscale", "colour"]
    with pytest.raises(ValueError, match="measures"):
        add_slices(pd.DataFrame({"x": [0, 1]}), m)


def test_source_and_attributes_kept_with_unknown_for_missing():
    df = pd.DataFrame({"source": ["a", None], "attr_glasses": ["yes", np.nan], "other": [1, 2]})
    out = add_slices(df, None)
    assert out["source"].tolist() == ["a", "unknown"]
    assert out["attr_glasses"].tolist() == ["yes", "unknown"]
    assert out["other"].tolist() == [1, 2]
    assert "face_size" not in out and "blur" not in out


def test_planted_bad_subgroup_is_worst_and_its_interval_excludes_the_good_one():
    df = predictions({"bad": (100, 0.60), "good": (100, 0.98)})
    table = slice_table(df, ["group"], classes=["with_mask", "without_mask"])
    t = table.set_index("slice")
    assert t.loc["bad", "accuracy"] == 0.6 and t.loc["good", "accuracy"] == 0.98
    assert t.loc["bad", "acc_lo"] < 0.6 < t.loc["bad", "acc_hi"] < 0.98
    assert t.loc["good", "acc_lo"] > 0.6
    s = slice_summary(table)["group"]
    assert s["worst_slice"] == "bad" and s["best_slice"] == "good"
    assert s["worst_n"] == 100 and s["ranked"] == 2 and s["flagged"] == 0
    assert s["gap"] == pytest.approx(0.38) and s["ratio"] == pytest.approx(0.6 / 0.98, abs=1e-6)


def test_interval_is_a_95_percent_bootstrap_interval_and_reproducible():
    df = predictions({"g": (400, 0.8)})
    a = slice_table(df, ["group"], n_boot=100_000, seed=3)
    # Resampled accuracies are Binomial(400, 0.8) / 400: the interval is its 2.5 % and
    # 97.5 % quantiles, to one step of 1/400 (a 90 % interval is 2-3 steps narrower).
    assert a["acc_lo"][0] == pytest.approx(binom.ppf(0.025, 400, 0.8) / 400, abs=0.0026)
    assert a["acc_hi"][0] == pytest.approx(binom.ppf(0.975, 400, 0.8) / 400, abs=0.0026)
    b = slice_table(df, ["group"], n_boot=1000, seed=3)
    pd.testing.assert_frame_equal(b, slice_table(df, ["group"], n_boot=1000, seed=3))
    assert not b.equals(slice_table(df, ["group"], n_boot=1000, seed=4))


def test_small_slices_are_flagged_and_never_worst():
    df = predictions({"tiny": (10, 0.1), "bad": (30, 0.7), "good": (100, 0.95)})
    table = slice_table(df, ["group"], min_count=30)
    small = table.set_index("slice")["small"].to_dict()
    assert small == {"bad": False, "good": False, "tiny": True}  # 30 rows are enough
    s = slice_summary(table)["group"]
    assert s["worst_slice"] == "bad" and s["ranked"] == 2 and s["flagged"] == 1


def test_per_class_recall_with_nan_for_an_absent_class():
    df = pd.DataFrame(
        {
            "group": ["a", "a", "a", "b"],
            "label": ["x", "x", "y", "x"],
            "predicted": ["x", "y", "y", "x"],
        }
    )
    t = slice_table(df, ["group"], classes=["x", "y"], min_count=1).set_index("slice")
    assert t.loc["a", "recall_x"] == 0.5 and t.loc["a", "recall_y"] == 1.0
    assert t.loc["b", "recall_x"] == 1.0 and np.isnan(t.loc["b", "recall_y"])


def test_intersections_count_rows_of_both_values():
    df = predictions({"a": (60, 0.9), "b": (40, 0.9)})
    df["size"] = np.where(np.arange(len(df)) % 4 == 0, "small", "big")
    table = slice_table(df, ["group", "missing_family"], intersections=[("group", "size")])
    assert set(table["family"]) == {"group", "group x size"}  # a missing family is skipped
    n = table[table["family"] == "group x size"].set_index("slice")["n"].to_dict()
    assert n == {"a x big": 45, "a x small": 15, "b x big": 30, "b x small": 10}
    assert list(table.columns[:6]) == ["family", "slice", "n", "accuracy", "acc_lo", "acc_hi"]


def test_single_slice_family_is_kept_without_a_gap():
    table = slice_table(predictions({"only": (50, 0.9)}), ["group"])
    assert len(table) == 1
    s = slice_summary(table)["group"]
    assert s["worst_slice"] == "only" and s["worst_accuracy"] == 0.9
    assert s["best_slice"] is None and s["gap"] is None and s["ratio"] is None
    small = slice_summary(slice_table(predictions({"only": (5, 0.9)}), ["group"]))["group"]
    assert small["worst_slice"] is None and small["ranked"] == 0 and small["flagged"] == 1


def test_bootstrap_of_5k_rows_is_fast():
    df = predictions({"a": (2500, 0.9), "b": (2500, 0.8)})
    df["c"] = np.arange(len(df)) % 7
    start = time.perf_counter()
    slice_table(df, ["group", "c"], intersections=[("group", "c")], n_boot=1000)
    assert time.perf_counter() - start < 2


def test_per_source_held_in_accuracy_of_a_several_source_split():
    from facemask.evaluation.scorecard import per_source

    table = predictions({"a": (40, 0.95), "b": (20, 0.5)}).rename(columns={"group": "source"})
    got = per_source(table, ["with_mask", "without_mask"])
    assert got == {
        "a": {"accuracy": 0.95, "n": 40, "errors": 2},
        "b": {"accuracy": 0.5, "n": 20, "errors": 10},
    }
