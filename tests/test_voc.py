"""Box-annotated sources: one crop per box, scenes kept whole, bad annotations reported."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from facemask.data.prepare import Source, build_index
from facemask.data.split import split_index
from facemask.data.voc import Box, square_crop_box
from tests.conftest import draw_face

CLASSES = {"with_mask": "with_mask", "without_mask": "without_mask",
           "mask_weared_incorrect": "mask_worn_incorrectly"}  # fmt: skip


def voc_xml(filename: str, boxes: list[tuple[str, int, int, int, int]]) -> str:
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in boxes
    )
    return f"<annotation><filename>{filename}</filename>{objects}</annotation>"


def make_voc(root, n_scenes: int = 12, seed: int = 0):
    """Scenes of 160x120 px with three 40 px faces each, one per class."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    names = list(CLASSES)
    for s in range(n_scenes):
        scene = Image.new("RGB", (160, 120), tuple(int(v) for v in rng.integers(0, 255, 3)))
        boxes = []
        for k, name in enumerate(names):
            face = draw_face(rng, name != "without_mask", 40)
            x, y = 10 + 50 * k, 40
            scene.paste(face, (x, y))
            boxes.append((names[(k + s) % 3], x, y, x + 40, y + 40))
        scene.save(root / "images" / f"scene{s}.jpg", quality=95)
        (root / "annotations" / f"scene{s}.xml").write_text(voc_xml(f"scene{s}.jpg", boxes))
    return root


def test_square_crop_box_adds_margin_and_clips():
    assert square_crop_box(Box("x", 40, 40, 60, 80), 200, 200, 0.25) == (20, 30, 80, 90)
    assert square_crop_box(Box("x", 0, 0, 20, 20), 100, 100, 0.5) == (0, 0, 30, 30)


def test_voc_crops_scenes_and_problems(tmp_path):
    root = make_voc(tmp_path / "voc")
    ann = root / "annotations"
    (ann / "broken.xml").write_text("<annotation><filename>scene0.jpg</file")
    (ann / "orphan.xml").write_text(voc_xml("missing.jpg", [("with_mask", 0, 0, 30, 30)]))
    (ann / "odd.xml").write_text(voc_xml("scene1.jpg", [("hat", 0, 0, 30, 30),
                                                        ("with_mask", 5, 5, 12, 12)]))  # fmt: skip
    (ann / "bomb.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "bbbbbbbb">]><annotation>&b;</annotation>'
    )
    index, rejected, report = build_index(
        [Source("v", root, CLASSES, format="voc")], crops_dir=tmp_path / "crops",
        min_side=16, crop_margin=0.1, min_box=16, near_duplicate_distance=-1, workers=1,
    )  # fmt: skip
    assert len(index) == 36 and report["scenes"] == 12
    assert set(index["label"]) == set(CLASSES.values())
    assert (index["scene"] == "v/" + index["path"].str.extract(r"(scene\d+)_")[0]).all()
    # every crop of a scene shares one split group; scenes differ
    assert index.groupby("scene")["group"].nunique().eq(1).all()
    assert index["group"].nunique() == 12
    with Image.open(index["path"].iloc[0]) as crop:
        assert crop.size == (48, 48)  # 40 px box + 10 % each side, square

    reasons = rejected.set_index("path")["reason"]
    assert "unreadable annotation" in reasons[(ann / "broken.xml").as_posix()]
    assert "no image missing.jpg" in reasons[(ann / "orphan.xml").as_posix()]
    assert "unreadable annotation" in reasons[(ann / "bomb.xml").as_posix()]  # no entities
    assert "unmapped box class: 'hat'" in reasons[f"{(ann / 'odd.xml').as_posix()}#0"]
    assert reasons[f"{(ann / 'odd.xml').as_posix()}#1"].startswith("box too small")


def test_split_keeps_scenes_whole(tmp_path):
    root = make_voc(tmp_path / "voc", n_scenes=30)
    index, _, _ = build_index([Source("v", root, CLASSES, format="voc")],
                              crops_dir=tmp_path / "crops", min_side=16, workers=1)  # fmt: skip
    split = split_index(index, 0.2, 0.2, seed=0)
    assert index.assign(s=split).groupby("scene")["s"].nunique().eq(1).all()
    assert set(split) == {"train", "valid", "test"}


def test_pinned_source_and_attributes(tmp_path):
    """A train-only source drags every copy of its images into train; attributes parse."""
    rng = np.random.default_rng(3)
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(30):
        (a / "m").mkdir(parents=True, exist_ok=True)
        draw_face(rng, i % 2 == 0, 48).save(a / "m" / f"{i:02d}_Mask_Chin.jpg", quality=95)
    (b / "m").mkdir(parents=True)
    for i in range(5):  # the same files appear in the pinned source
        (b / "m" / f"copy{i}.jpg").write_bytes((a / "m" / f"{i:02d}_Mask_Chin.jpg").read_bytes())
    pd.DataFrame({"file": ["m/copy0.jpg", "m/copy1.jpg"], "age": ["31", "45"]}).to_csv(
        b / "side.csv", index=False
    )
    index, _, _ = build_index(
        [Source("a", a, {"m": "with_mask"}, attributes=r"_Mask_(?P<wearing>\w+)\."),
         Source("b", b, {"m": "with_mask"}, split="train", attributes_csv="side.csv")],
        min_side=16, near_duplicate_distance=-1, workers=1,
    )  # fmt: skip
    assert (index.loc[index["source"] == "a", "attr_wearing"] == "Chin").all()
    ages = index.set_index(index["path"].str.rsplit("/", n=1).str[1])["attr_age"]
    assert ages["copy0.jpg"] == 31 or ages["copy0.jpg"] == "31"
    assert pd.isna(ages["copy4.jpg"])
    split = split_index(index.assign(label=["with_mask", "without_mask"] * 17 + ["with_mask"]),
                        0.2, 0.2, seed=0)  # fmt: skip
    copies = index["path"].str.contains("copy") | index["path"].str.match(r".*/0[0-4]_Mask")
    assert (split[copies] == "train").all()
    assert set(split[~copies]) == {"train", "valid", "test"}
