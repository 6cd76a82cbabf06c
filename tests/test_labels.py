"""Label reviews (keep / relabel / drop, applied after the split) and the out-of-fold audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facemask.data.reviews import (
    AUDIT_COLUMNS,
    apply_label_reviews,
    read_label_reviews,
    reviewed_mask,
)
from facemask.data.split import SPLITS
from facemask.params import HeadParams
from facemask.training.audit import (
    find_suspects,
    label_issues,
    out_of_fold_probs,
    summarize_audit,
)
from tests.conftest import params_with
from tests.test_split import index_frame

CLASSES = ["a", "b"]


def write_reviews(path, rows: list[dict]) -> None:
    pd.DataFrame(rows, columns=["sha256", "label", "path", "reason"]).to_csv(path, index=False)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"sha256": "s1", "label": "c", "reason": "x"}], "line 2: label 'c' is not one of"),
        ([{"sha256": "s1", "label": "a", "reason": " "}], "line 2: a review needs a reason"),
        (
            [
                {"sha256": "s1", "label": "a", "reason": "x"},
                {"sha256": "s1", "label": "b", "reason": "y"},
            ],
            "line 3: sha256 is listed twice",
        ),
    ],
)
def test_bad_review_rows_name_file_and_line(tmp_path, rows, message):
    path = tmp_path / "reviews.csv"
    write_reviews(path, rows)
    with pytest.raises(ValueError, match=message) as err:
        read_label_reviews(path, CLASSES)
    assert str(path) in str(err.value)


def test_review_file_without_reason_column_is_refused(tmp_path):
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"sha256": ["s"], "label": ["a"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"missing columns \['reason'\]"):
        read_label_reviews(path, CLASSES)


def with_copy_hashes(df: pd.DataFrame) -> pd.DataFrame:
    """Resized copies of one picture: same `copies` group, each its own sha256."""
    n = df.groupby("copies").cumcount().astype(str)
    return df.assign(sha256=df["sha256"] + "_" + n)


def test_decisions_follow_every_copy_and_keep_the_published_label(tmp_path):
    df = with_copy_hashes(index_frame(40).assign(source="s"))
    copies = df[df.duplicated("copies", keep=False)]  # a picture with resized copies
    target = copies.iloc[0]
    other = "b" if target["label"] == "a" else "a"
    single = df[~df.duplicated("copies", keep=False)].iloc[0]
    kept = df[~df.duplicated("copies", keep=False)].iloc[1]
    path = tmp_path / "reviews.csv"
    write_reviews(
        path,
        [
            {"sha256": target["sha256"], "label": other, "path": "", "reason": "mislabelled"},
            {"sha256": single["sha256"], "label": "drop", "path": "", "reason": "no face"},
            {"sha256": kept["sha256"], "label": kept["label"], "path": "", "reason": "fine"},
        ],
    )
    out, counts = apply_label_reviews(df, read_label_reviews(path, CLASSES, "s"))
    group = out[out["copies"] == target["copies"]]
    n_copies = int((df["copies"] == target["copies"]).sum())
    assert len(group) == n_copies > 1
    assert (group["label"] == other).all()
    assert (group["published_label"] == target["label"]).all()
    assert (group["label_review"] == "mislabelled").all()
    assert single["sha256"] not in set(out["sha256"])
    assert len(out) == len(df) - 1
    assert counts == {"relabelled": n_copies, "kept": 1, "dropped": 1}
    untouched = out[~out["copies"].isin([target["copies"], kept["copies"]])]
    assert (untouched["label"] == untouched["published_label"]).all()
    assert (untouched["label_review"] == "").all()


def test_two_decisions_on_one_picture_are_refused(tmp_path):
    df = with_copy_hashes(index_frame(40).assign(source="s"))
    copies = df[df.duplicated("copies", keep=False)]
    pair = copies[copies["copies"] == copies["copies"].iloc[0]].iloc[:2]
    path = tmp_path / "reviews.csv"
    write_reviews(
        path,
        [
            {"sha256": pair["sha256"].iloc[0], "label": "drop", "path": "", "reason": "x"},
            {"sha256": pair["sha256"].iloc[1], "label": "a", "path": "", "reason": "y"},
        ],
    )
    with pytest.raises(ValueError, match=r"line 3: decides the same picture .* line 2"):
        apply_label_reviews(df, read_label_reviews(path, CLASSES, "s"))


def test_review_of_an_unknown_picture_names_file_line_and_path(tmp_path):
    df = index_frame(10).assign(source="s")
    path = tmp_path / "reviews.csv"
    row = {"sha256": "f" * 64, "label": "a", "path": "a/1.jpg", "reason": "x"}
    write_reviews(path, [row])
    with pytest.raises(ValueError, match=r"reviews.csv line 2: sha256 ffff.*\(a/1.jpg\) .*'s'"):
        apply_label_reviews(df, read_label_reviews(path, CLASSES, "s"))
    # a picture of another source is not this source's picture
    row["sha256"] = df["sha256"].iloc[0]
    write_reviews(path, [row])
    with pytest.raises(ValueError, match="matches no image of source 'other'"):
        apply_label_reviews(df, read_label_reviews(path, CLASSES, "other"))


def test_split_stage_applies_reviews_after_drawing_the_split(tmp_path):
    from stages import split as split_stage

    df = index_frame(120).assign(source="s")
    df.to_csv(tmp_path / "index.csv", index=False)
    params = params_with(
        seed=0,
        classes=CLASSES,
        split={"valid": 0.2, "test": 0.2, "unique_eval": True, "label_reviews": {}},
        prepare={"near_duplicate_distance": -1},
    )

    def run(name: str) -> dict[str, pd.DataFrame]:
        split_stage.main(params, tmp_path / "index.csv", tmp_path / name, tmp_path / "r.json")
        return {s: pd.read_csv(tmp_path / name / f"{s}.csv") for s in ("train", "valid", "test")}

    before = run("plain")
    # Relabel every test picture of class "a": stratifying on the new labels would move
    # pictures between splits; drawing on the published ones must not.
    test_a = before["test"][before["test"]["label"] == "a"]
    dropped = before["valid"].iloc[0]
    path = tmp_path / "reviews.csv"
    write_reviews(
        path,
        [{"sha256": h, "label": "b", "path": "", "reason": "r"} for h in test_a["sha256"]]
        + [{"sha256": dropped["sha256"], "label": "drop", "path": "", "reason": "r"}],
    )
    kept = before["train"].iloc[0]
    rows = pd.read_csv(path).to_dict("records")
    rows.append({"sha256": kept["sha256"], "label": kept["label"], "path": "", "reason": "ok"})
    write_reviews(path, rows)
    params["split"]["label_reviews"] = {"s": str(path), "not_in_use": str(tmp_path / "absent")}
    after = run("reviewed")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["label_reviews_skipped_sources"] == ["not_in_use"]
    assert report["train"]["label_reviews"] == {"relabelled": 0, "kept": 1, "dropped": 0}
    # reasons stay out of the split files (editing one must not rerun training)
    assert "label_review" not in after["train"].columns
    assert set(after["train"]["sha256"]) == set(before["train"]["sha256"])
    assert set(after["test"]["sha256"]) == set(before["test"]["sha256"])
    assert set(after["valid"]["sha256"]) == set(before["valid"]["sha256"]) - {dropped["sha256"]}
    assert (after["test"]["label"] == "b").all()
    assert (after["test"]["published_label"] != after["test"]["label"]).sum() == len(test_a)
    assert report["test"]["label_reviews"]["relabelled"] == len(test_a) > 0
    assert report["valid"]["label_reviews"]["dropped"] == 1


def planted(n: int = 240, flipped: int = 6, seed: int = 0):
    """Two separable clusters of features; the first `flipped` rows carry the wrong label."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(0, 1, (n, 16)).astype(np.float32)
    x[:, 0] += np.where(y == 0, -4.0, 4.0)
    given = y.copy()
    given[:flipped] = 1 - given[:flipped]
    df = pd.DataFrame(
        {
            "path": [f"{i}.jpg" for i in range(n)],
            "label": [CLASSES[i] for i in given],
            "group": np.arange(n) // 2,  # pairs of rows travel together
            "copies": np.arange(n),
            "split": "train",
        }
    )
    return df, torch.from_numpy(x)


HEAD = {"epochs": 30, "lr": 0.05, "weight_decay": 0.0, "dropout": 0.0, "label_smoothing": 0.0,
        "flip_views": False, "degraded_views": 0}  # fmt: skip


def head_params(**overrides) -> HeadParams:
    return HeadParams.model_validate({**HEAD, **overrides})


def test_audit_ranks_planted_label_errors_first_and_flags_them():
    df, x = planted()
    probs = out_of_fold_probs(df, x, 4, CLASSES, head_params(patience=5), seed=0)
    table = label_issues(df, probs, CLASSES)
    assert set(table["path"].head(6)) == {f"{i}.jpg" for i in range(6)}
    assert (table["self_confidence"].head(6) < 0.2).all()
    # cleanlab's pruning is strict: most planted errors flagged, no clean picture
    flagged = set(table.loc[table["issue"], "path"])
    assert len(flagged) >= 4
    assert flagged <= {f"{i}.jpg" for i in range(6)}
    assert (table["predicted"].head(6) != table["label"].head(6)).all()


def test_out_of_fold_means_a_picture_never_trains_its_own_head(monkeypatch):
    import facemask.training.audit as labels

    df, _ = planted(n=60, flipped=0)
    ids = torch.arange(60, dtype=torch.float32)[:, None]  # a feature that names the row
    seen: list[set[int]] = []

    def fake_fit_head(linear, train_x, train_y, valid_x, valid_y, **_):
        # Record the rows this head learns from (or early-stops on); make the head
        # predict p(b) = sigmoid(call number) so each row shows which head scored it.
        seen.append({int(v) for v in torch.cat([train_x, valid_x])[:, 0]})
        with torch.no_grad():
            linear.weight.zero_()
            linear.bias.copy_(torch.tensor([0.0, float(len(seen) - 1)]))
        return []

    monkeypatch.setattr(labels, "fit_head", fake_fit_head)
    probs = out_of_fold_probs(df, ids, 3, CLASSES, head_params(patience=1))
    assert len(seen) == 3
    head_of_row = np.round(np.log(probs[:, 1] / probs[:, 0])).astype(int)
    for row, head in enumerate(head_of_row):
        assert row not in seen[head], (row, head)
    assert all(len(s) > 30 for s in seen)  # each head learns from the other folds


def test_copies_count_once_and_reviewed_pictures_are_marked():
    df, _ = planted(n=40, flipped=0)
    df["copies"] = np.arange(40) // 2  # each picture twice
    df["published_label"] = df["label"]
    df["source"] = "s"
    df["sha256"] = [f"h{i}" for i in range(40)]
    reviews = pd.DataFrame([{"sha256": "h7", "label": "b", "reason": "looked", "source": "s"}])
    probs = np.tile([0.9, 0.1], (40, 1)).astype(np.float32)
    table = label_issues(df, probs, CLASSES, reviewed_mask(df, reviews))
    assert len(table) == 20
    assert table["reviewed"].sum() == 1
    assert table.loc[table["reviewed"], "path"].item() == "6.jpg"


def test_audit_stage_on_tiny_images(tmp_path, monkeypatch, params):
    from stages import audit
    from tests.conftest import run_data_stages

    monkeypatch.chdir(tmp_path)
    splits = run_data_stages(params)
    n = sum(len(pd.read_csv(splits / f"{s}.csv").drop_duplicates("copies")) for s in SPLITS)
    out = audit.main(
        params, splits, Path("audit.csv"), Path("audit.json"), Path("plots/label_audit.png")
    )
    table = pd.read_csv("audit.csv")
    assert out["pictures"] == n
    assert out["out_of_fold_errors"] == int((table["predicted"] != table["label"]).sum())
    assert out["to_review"] == int((~table["reviewed"]).sum())  # nothing reviewed yet
    assert set(table["split"]) <= set(SPLITS)
    assert json.loads(Path("audit.json").read_text()) == out
    # The gallery: the pictures left to review, 6 to a row of 2.1 x 2.4 in tiles at 100 dpi.
    with Image.open("plots/label_audit.png") as im:
        pixels = np.asarray(im.convert("RGB"))
    rows = -(-min(params["audit"]["gallery"], out["to_review"]) // 6)
    assert pixels.shape[0] == pytest.approx(240 * rows, rel=0.15)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # faces drawn, not just text


def test_audit_off_writes_empty_outputs_without_reading_the_data(tmp_path, params):
    from stages import audit

    params = {**params, "audit": {**params["audit"], "folds": 0}}
    missing = tmp_path / "no-splits"  # never read: a disabled audit touches no data
    paths = tmp_path / "audit.csv", tmp_path / "audit.json", tmp_path / "plots" / "audit.png"
    out = audit.main(params, missing, *paths)
    assert "audit.folds is 0" in out["skipped"]
    assert json.loads(paths[1].read_text()) == out
    table = pd.read_csv(paths[0])
    assert table.empty and list(table.columns) == list(AUDIT_COLUMNS)
    with Image.open(paths[2]) as im:
        assert im.size == (640, 80)
    params["audit"]["folds"] = 1  # one fold cannot hold anything out
    with pytest.raises(ValueError, match=r"audit\.folds"):
        audit.main(params, missing, *paths)


def test_suspects_and_audit_counts():
    table = pd.DataFrame(
        {
            "label": ["a", "a", "b", "b", "a"],
            "published_label": ["a", "b", "b", "b", "a"],
            "predicted": ["a", "b", "b", "a", "a"],
            "issue": [True, True, False, False, False],
            "reviewed": [True, False, False, False, False],
            "split": ["train", "valid", "test", "test", "train"],
        }
    )
    suspect = find_suspects(table)
    assert suspect.tolist() == [True, True, False, True, False]  # flagged, or predicted otherwise
    assert summarize_audit(table, suspect) == {
        "pictures": 5,
        "out_of_fold_accuracy": 0.6,
        "out_of_fold_errors": 2,
        "flagged": 2,
        "to_review": 2,  # row 0 is reviewed already
        "to_review_per_split": {"train": 0, "valid": 1, "test": 1},
        "reviewed": 1,
        "relabelled": 1,
    }
