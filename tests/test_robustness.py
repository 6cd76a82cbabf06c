"""Corruptions and accuracy under them, on synthetic images and a rule-based 'model'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from facemask.evaluation.robustness import (
    CORRUPTIONS,
    corrupt,
    robustness_summary,
    robustness_table,
    stratified_sample,
)
from facemask.evaluation.slices import image_measures


def detailed(n: int = 4, size: int = 64, seed: int = 0) -> np.ndarray:
    """Colour images with fine detail (noise over a gradient), mid-grey on average."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(60, 190, size)[None, :, None, None]
    return np.clip(ramp + rng.normal(0, 40, (n, size, size, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_no_severity_leaves_images_unchanged(name):
    images = detailed()
    for severity in (None, 0):
        out = corrupt(images, name, severity)
        assert out.dtype == np.uint8 and np.array_equal(out, images)
        assert out is not images  # a copy: callers may write into it


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_default_severity_changes_images_and_keeps_shape(name):
    images = detailed()
    for severity in CORRUPTIONS[name]:
        out = corrupt(images, name, severity)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert not np.array_equal(out, images), (name, severity)


def test_neutral_factors_and_sizes_are_identity():
    images = detailed()
    assert np.array_equal(corrupt(images, "brightness", 1.0), images)
    assert np.array_equal(corrupt(images, "contrast", 1), images)
    assert np.array_equal(corrupt(images, "downscale", 64), images)  # already that small
    assert np.array_equal(corrupt(images, "downscale", 100), images)


def test_downscale_removes_fine_detail():
    images = detailed(size=224)
    sharp = image_measures(images)["blur"]
    small = image_measures(corrupt(images, "downscale", 16))["blur"]
    assert (small < sharp / 50).all()
    # ... but keeps the coarse picture: the top-to-bottom gradient survives.
    out = corrupt(images, "downscale", 16).astype(float)
    assert out[:, -20:].mean() - out[:, :20].mean() > 80


def test_blur_grows_with_sigma():
    images = detailed(size=224)
    blur = [image_measures(corrupt(images, "blur", s))["blur"].mean() for s in (1, 2, 4)]
    assert blur[0] > blur[1] > blur[2]


def test_jpeg_low_quality_changes_pixels_more_than_high():
    images = detailed()
    err = {q: np.abs(corrupt(images, "jpeg", q).astype(int) - images).mean() for q in (90, 50, 10)}
    assert err[90] > 0 and err[10] > err[50] > err[90]


def test_noise_is_seeded_and_scaled():
    images = np.full((2, 32, 32, 3), 128, np.uint8)
    a, b = corrupt(images, "noise", 16, seed=1), corrupt(images, "noise", 16, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, corrupt(images, "noise", 16, seed=2))
    assert (a.astype(float) - 128).std() == pytest.approx(16, rel=0.05)
    assert (corrupt(images, "noise", 32, seed=1).astype(float) - 128).std() > 30


def test_brightness_contrast_grayscale():
    images = detailed()
    mean = images.mean()
    assert corrupt(images, "brightness", 0.25).mean() == pytest.approx(mean * 0.25, rel=0.02)
    assert corrupt(images, "brightness", 1.5).mean() > mean
    flat = corrupt(images, "contrast", 0.25).astype(float)
    assert flat.std() < images.std() * 0.3
    assert flat.mean() == pytest.approx(mean, abs=2)  # towards the mean, not darker
    grey = corrupt(images, "grayscale", 1)
    assert image_measures(grey)["grayscale"].all()
    assert not image_measures(images)["grayscale"].any()


def test_unknown_corruption_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"fog.*downscale, blur, jpeg"):
        corrupt(detailed(), "fog", 1)


def brightness_model(images: np.ndarray) -> np.ndarray:
    """Knows the labels of the clean test images by their mean pixel; anything else: wrong."""
    means = images.reshape(len(images), -1).mean(1)
    return np.where(np.abs(means - CLEAN_MEANS) < 1, LABELS, 1 - LABELS)


IMAGES = detailed(n=8, size=32, seed=5)
CLEAN_MEANS = IMAGES.reshape(8, -1).mean(1)
LABELS = np.array([0, 1] * 4)


def test_robustness_table_clean_row_first_and_lower_when_corrupted():
    table = robustness_table(brightness_model, IMAGES, LABELS)
    assert list(table.columns) == ["corruption", "severity", "accuracy", "n"]
    assert table.iloc[0].tolist() == ["none", 0, 1.0, 8]
    assert len(table) == 1 + sum(len(v) for v in CORRUPTIONS.values())
    bright = table[table["corruption"] == "brightness"]
    assert (bright["accuracy"] < 1).all()
    assert bright["severity"].tolist() == CORRUPTIONS["brightness"]
    s = robustness_summary(table)
    assert s["clean_accuracy"] == 1.0
    assert s["per_corruption"]["brightness"] == 0.0
    assert s["worst"]["accuracy"] == table["accuracy"].min()
    assert s["mean_corrupted_accuracy"] == pytest.approx(table["accuracy"][1:].mean())
    assert list(s["per_corruption"]) == list(CORRUPTIONS)


def test_robustness_table_with_chosen_corruptions():
    table = robustness_table(brightness_model, IMAGES, LABELS, {"grayscale": [1]})
    assert table["corruption"].tolist() == ["none", "grayscale"]
    assert robustness_summary(table)["worst"] == {
        "corruption": "grayscale",
        "severity": 1,
        "accuracy": table["accuracy"][1],
    }


def test_stratified_sample_keeps_proportions_and_is_deterministic():
    df = pd.DataFrame({"label": ["a"] * 700 + ["b"] * 300}).sample(frac=1, random_state=0)
    pos = stratified_sample(df, 100, seed=0)
    assert len(pos) == 100 and len(set(pos)) == 100 and (np.diff(pos) > 0).all()
    assert df["label"].iloc[pos].value_counts().to_dict() == {"a": 70, "b": 30}
    assert np.array_equal(pos, stratified_sample(df, 100, seed=0))
    assert not np.array_equal(pos, stratified_sample(df, 100, seed=1))
    odd = stratified_sample(df, 7, seed=0)  # 4.9 and 2.1: the larger remainder gets the row
    assert df["label"].iloc[odd].value_counts().to_dict() == {"a": 5, "b": 2}
    assert np.array_equal(stratified_sample(df, 5000, seed=0), np.arange(1000))
