"""Group-aware stratified split and the leak check that verifies it."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from facemask.data.split import cross_split_leaks, group_folds, split_index
from tests.conftest import params_with


def index_frame(n_groups: int = 200, seed: int = 0) -> pd.DataFrame:
    """Rows in groups of 1-4; 60/40 class balance. Even groups are copies of one picture
    (one sha256), odd groups are scenes: distinct crops that merely travel together."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        label = "a" if rng.random() < 0.6 else "b"
        phash = rng.integers(0, 256, 8, dtype=np.uint8).tobytes().hex()
        for k in range(int(rng.integers(1, 5))):
            scene = g % 2 == 1
            rows.append({
                "path": f"{g}_{k}.jpg", "label": label, "group": g,
                "copies": f"{g}_{k}" if scene else str(g),
                "sha256": f"sha{g}_{k}" if scene else f"sha{g}", "phash": phash,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_groups_never_span_splits_and_ratios_hold():
    df = index_frame()
    split = split_index(df, valid=0.15, test=0.15, seed=1)
    assert (df.assign(s=split).groupby("group")["s"].nunique() == 1).all()
    frac = split.value_counts(normalize=True)
    assert abs(frac["test"] - 0.15) < 0.05 and abs(frac["valid"] - 0.15) < 0.05
    for name in ("train", "valid", "test"):  # stratified: class shares close to overall
        share = (df["label"][split == name] == "a").mean()
        assert abs(share - (df["label"] == "a").mean()) < 0.1


def test_split_is_deterministic_and_seed_dependent():
    df = index_frame()
    a = split_index(df, 0.2, 0.2, seed=3)
    assert a.equals(split_index(df, 0.2, 0.2, seed=3))
    assert not a.equals(split_index(df, 0.2, 0.2, seed=4))


def test_pinned_groups_go_to_their_split_and_an_empty_pin_column_changes_nothing():
    df = index_frame()
    # read_csv gives an all-NaN float column when no source is pinned: pandas 3 warns that
    # filling it with "" will raise in pandas 4, so warnings are errors here.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unpinned = split_index(df.assign(fixed_split=np.nan), 0.2, 0.2, seed=3)
    assert unpinned.equals(split_index(df, 0.2, 0.2, seed=3))
    pins = df["group"].isin([1, 2, 3]) & (df["path"].str.endswith("_0.jpg"))
    split = split_index(df.assign(fixed_split=np.where(pins, "train", None)), 0.2, 0.2, seed=3)
    # a pin takes its whole group along, copies included
    assert (split[df["group"].isin([1, 2, 3])] == "train").all()
    assert set(split) == {"train", "valid", "test"}


@pytest.mark.parametrize("valid,test", [(0, 0.2), (0.5, 0.5), (0.2, 1.2)])
def test_bad_ratios_are_refused(valid, test):
    with pytest.raises(ValueError, match="ratios"):
        split_index(index_frame(20), valid, test, seed=0)


def test_leak_check_finds_planted_exact_and_near_copies():
    df = index_frame(50)
    split = split_index(df, 0.2, 0.2, seed=0)
    parts = {s: df[split == s] for s in ("train", "valid", "test")}
    assert cross_split_leaks(parts, max_distance=4) == {
        "exact_duplicates_across_splits": 0,
        "near_duplicates_across_splits": 0,
    }
    # copy one test row into train (exact), and one near copy (1 bit flipped)
    leaked = parts["test"].iloc[[0]]
    near = parts["test"].iloc[[1]].copy()
    bits = bytearray(bytes.fromhex(near["phash"].iloc[0]))
    bits[0] ^= 1
    near["phash"], near["sha256"] = bits.hex(), "other"
    parts["train"] = pd.concat([parts["train"], leaked, near])
    leaks = cross_split_leaks(parts, max_distance=4)
    assert leaks["exact_duplicates_across_splits"] == 1
    assert leaks["near_duplicates_across_splits"] >= 2  # the exact copy is near too


def test_split_stage_keeps_one_copy_per_group_in_eval(tmp_path):
    from stages import split as split_stage

    df = index_frame(120)
    df.to_csv(tmp_path / "index.csv", index=False)
    params = params_with(
        seed=0,
        classes=["a", "b"],
        split={"valid": 0.2, "test": 0.2, "unique_eval": True, "label_reviews": {}},
        prepare={"near_duplicate_distance": -1},
    )
    report = split_stage.main(params, tmp_path / "index.csv", tmp_path / "s", tmp_path / "r.json")
    parts = {s: pd.read_csv(tmp_path / "s" / f"{s}.csv") for s in ("train", "valid", "test")}
    for name in ("valid", "test"):
        assert parts[name]["copies"].astype(str).is_unique
        assert report["duplicates_dropped_from_eval"][name] > 0
        # crops of one scene are different pictures: they all stay
        scenes = parts[name][parts[name]["group"] % 2 == 1]
        assert not scenes["group"].is_unique
    assert not parts["train"]["group"].is_unique  # training keeps every copy
    dropped = sum(report["duplicates_dropped_from_eval"].values())
    assert sum(len(p) for p in parts.values()) + dropped == len(df)


@pytest.mark.parametrize("trial", range(40))
def test_group_folds_are_sklearns_stratified_group_kfold(trial):
    """The fast fold assignment is sklearn's, row for row, on uneven random groupings."""
    from sklearn.model_selection import StratifiedGroupKFold

    rng = np.random.default_rng(trial)
    n = int(rng.integers(30, 400))
    labels = rng.choice(["a", "b", "c"][: int(rng.integers(2, 4))], n)
    groups = rng.integers(0, max(3, n // int(rng.integers(1, 6))), n)
    df = pd.DataFrame({"label": labels, "group": groups})
    # as group_folds caps it: no more folds than groups, or than members of the largest class
    n_folds = min(int(rng.integers(2, 21)), df["group"].nunique(), df["label"].value_counts().max())
    seed = int(rng.integers(0, 10_000))
    want = np.empty(n, dtype=np.int64)
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class smaller than n_folds: sklearn warns, we don't
        for k, (_, held) in enumerate(cv.split(df, df["label"], df["group"])):
            want[held] = k
    assert (group_folds(df, n_folds, seed) == want).all()
