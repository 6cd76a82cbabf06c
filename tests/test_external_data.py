"""External test sets and the folder-attribute reader: what evaluation reads must be honest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from facemask.data.external import left_out_counts, seen_in_training, unique_pictures
from facemask.data.prepare import Source, build_index, sources_from_specs
from tests.conftest import draw_face

CLASSES = ["with_mask", "without_mask"]


def demographics(tmp_path):
    """mask-types-demographics in small: one picture filed by gender and again by race."""
    rng = np.random.default_rng(3)
    root = tmp_path / "demo"
    pics = {name: draw_face(rng, name != "bare", 48) for name in ("cloth", "n95", "bare", "x")}
    layout = {
        "cloth-mask-female": ["cloth"],
        "cloth-mask-black": ["cloth"],  # the same bytes: one picture, two attributes
        "n95-mask-famale": ["n95"],  # the source's spelling, kept
        "n95-mask-white": ["n95"],
        "no-mask-male": ["bare", "x"],
        "no-mask-female": ["x"],  # filed under both genders: label noise in the source
        "improper-mask-black": [],
    }
    for folder, names in layout.items():
        (root / folder).mkdir(parents=True)
        for n in names:
            pics[n].save(root / folder / f"{n}.jpg", quality=95)  # same image, same bytes
    return root


FOLDER_ATTRS = {
    "female": {"gender": "female"},
    "famale": {"gender": "female"},
    "male": {"gender": "male"},
    "black": {"race": "black"},
    "white": {"race": "white"},
}


def test_folder_attributes_merge_copies_into_one_row(tmp_path):
    root = demographics(tmp_path)
    src = Source(
        "demo",
        root,
        {"cloth-mask": "with_mask", "n95-mask": "with_mask", "no-mask": "without_mask"},
        folder_attributes=FOLDER_ATTRS,
    )
    index, _, report = build_index([src], min_side=16, workers=1)
    by = index.set_index(index["path"].str.rsplit("/", n=1).str[1])
    assert len(index) == 4 and by.index.is_unique  # cloth, n95, bare, x: one row each
    assert by.loc["cloth.jpg", ["attr_gender", "attr_race"]].tolist() == ["female", "black"]
    assert by.loc["n95.jpg", ["attr_gender", "attr_race"]].tolist() == ["female", "white"]
    assert by.loc["x.jpg", "attr_gender"] == "female|male"  # both genders: kept, visible
    assert pd.isna(by.loc["bare.jpg", "attr_race"])
    assert by.loc["cloth.jpg", "label"] == "with_mask"
    assert report["folder_copies_merged"] == 3
    assert report["conflicting_label_groups_dropped"] == 0  # copies are not a conflict
    assert report["unmapped_folders"] == {"demo": ["improper-mask-black"]}


def test_sources_from_specs_names_the_bad_set(tmp_path):
    good = {"name": "ok", "classes": {"a": "with_mask"}}
    bad = {"name": "crowd", "classes": {"a": "with_mask", "b": "masked_ish"}}
    with pytest.raises(ValueError, match=r"evaluate\.external\[crowd\].*masked_ish"):
        sources_from_specs([good, bad], tmp_path, CLASSES, "evaluate.external")
    with pytest.raises(ValueError, match=r"evaluate\.external\[empty\]"):
        sources_from_specs([{"name": "empty"}], tmp_path, CLASSES, "evaluate.external")
    assert sources_from_specs([good], tmp_path, CLASSES)[0].root == tmp_path / "ok"


def frame(sha, phash, path=None):
    return pd.DataFrame(
        {"sha256": sha, "phash": phash, "path": path or [f"p{i}" for i in range(len(sha))]}
    )


def test_external_copy_of_a_training_picture_is_removed():
    h = lambda bits: f"{int(bits, 2):016x}"  # noqa: E731  64-bit hashes as hex
    seen = frame(["s1", "s2"], [h("1" * 64), h("0" * 64)])
    ext = frame(
        ["s1", "e2", "e3", "e4"],
        [h("01" * 32), h("0" * 60 + "1111"), h("0011" * 16), h("10" * 32)],
    )
    # e1: same bytes as s1 though its hash differs; e2: 4 bits from s2; e3/e4: far from both.
    assert seen_in_training(ext, seen, 4).tolist() == [True, True, False, False]
    assert seen_in_training(ext, seen, 3).tolist() == [True, False, False, False]
    assert seen_in_training(ext, seen, -1).tolist() == [True, False, False, False]


def test_unique_pictures_keeps_one_per_copy_group():
    df = pd.DataFrame({"path": ["b", "a", "c"], "copies": [0, 0, 1]})
    assert unique_pictures(df)["path"].tolist() == ["a", "c"]


def test_left_out_counts_by_name():
    rejected = pd.DataFrame(
        {
            "reason": [
                "unmapped box class: 'mask_weared_incorrect'",
                "unmapped box class: 'mask_weared_incorrect'",
                "too small: 10x10",
            ]
        }
    )
    assert left_out_counts(rejected) == {"mask_weared_incorrect": 2}
