"""Scene readers: the same boxes written as VOC, YOLO txt, COCO json and a box CSV give the
same scenes index; bad files are named and skipped, not silently read."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from facemask.data.scenes import detect_format, list_scenes, scenes_index
from facemask.data.voc import read_voc
from tests.test_voc import make_voc

WIDTH, HEIGHT = 160, 120  # make_voc's scene size


def voc_boxes(root):
    """{stem: [(name, xmin, ymin, xmax, ymax)]} read back from make_voc's VOC files."""
    out = {}
    for xml in sorted((root / "annotations").glob("*.xml")):
        s = read_voc(xml, root / "images")
        out[s.image.stem] = [(b.name, b.xmin, b.ymin, b.xmax, b.ymax) for b in s.boxes]
    return out


def write_yolo(root, boxes, names, images):
    (root / "labels").mkdir(parents=True)
    (root / "images").symlink_to(images)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for stem, rows in boxes.items():
        lines = [
            f"{names.index(n)} {(a + c) / 2 / WIDTH} {(b + d) / 2 / HEIGHT} "
            f"{(c - a) / WIDTH} {(d - b) / HEIGHT}"
            for n, a, b, c, d in rows
        ]
        (root / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_coco(root, boxes, names, images):
    root.mkdir(parents=True)
    (root / "images").symlink_to(images)
    doc = {
        "categories": [{"id": 10 + k, "name": n} for k, n in enumerate(names)],
        "images": [{"id": i, "file_name": f"{s}.jpg"} for i, s in enumerate(boxes)],
        "annotations": [
            {"image_id": i, "category_id": 10 + names.index(n), "bbox": [a, b, c - a, d - b]}
            for i, rows in enumerate(boxes.values())
            for n, a, b, c, d in rows
        ],
    }
    (root / "scenes.json").write_text(json.dumps(doc))
    return root


def write_csv(root, boxes, images):
    """dataroots' layout: image paths from the source repository's root."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "raw_images").symlink_to(images)
    rows = [
        {
            "class": n,
            "x": a,
            "y": b,
            "w": c - a,
            "h": d - b,
            "raw_img_dir": f"data/raw_images/{s}.jpg",
        }
        for s, r in boxes.items()
        for n, a, b, c, d in r
    ]
    pd.DataFrame(rows).to_csv(root / "data" / "meta.csv", index=False)
    return root / "data"


@pytest.fixture
def scene_sets(tmp_path):
    voc = make_voc(tmp_path / "voc", n_scenes=4)
    boxes = voc_boxes(voc)
    names = sorted({n for rows in boxes.values() for n, *_ in rows})
    images = voc / "images"
    return {
        "voc": voc,
        "yolo": write_yolo(tmp_path / "yolo", boxes, names, images),
        "coco": write_coco(tmp_path / "coco", boxes, names, images),
        "csv": write_csv(tmp_path / "csv", boxes, images),
    }


def comparable(index: pd.DataFrame) -> pd.DataFrame:
    keep = index.drop(columns=["image"]).sort_values(["scene", "xmin"]).reset_index(drop=True)
    return keep.drop(columns=["box"]).round(6)


def test_every_format_gives_the_voc_index(scene_sets):
    want = comparable(scenes_index(list_scenes(scene_sets["voc"])[0], "s"))
    assert len(want) == 12 and set(want["name"]) == {
        "with_mask",
        "without_mask",
        "mask_weared_incorrect",
    }
    for fmt, root in scene_sets.items():
        assert detect_format(root) == fmt
        scenes, bad = list_scenes(root)
        assert bad == []
        assert [s.image.stem for s in scenes] == ["scene0", "scene1", "scene2", "scene3"], fmt
        pd.testing.assert_frame_equal(comparable(scenes_index(scenes, "s")), want, obj=fmt)
    assert (want["side"] == 40).all() and want["scene"].str.startswith("s/").all()


def test_ids_select_scenes_in_every_format(scene_sets):
    for root in scene_sets.values():
        scenes, _ = list_scenes(root, {"scene1", "scene3"})
        assert [s.image.stem for s in scenes] == ["scene1", "scene3"]


def test_bad_files_are_named_and_skipped(scene_sets):
    yolo = scene_sets["yolo"]
    (yolo / "labels" / "scene1.txt").write_text("0 0.5 0.5 0.1\n")  # four numbers
    (yolo / "labels" / "scene2.txt").write_text("7 0.5 0.5 0.1 0.1\n")  # no class 7
    (yolo / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # no image
    scenes, bad = list_scenes(yolo)
    assert [s.image.stem for s in scenes] == ["scene0", "scene3"]
    assert len(bad) == 3
    assert any("scene1.txt" in b and "line 1" in b for b in bad)
    assert any("scene2.txt" in b and "class 7" in b for b in bad)
    assert any("ghost.txt" in b and "no image" in b for b in bad)

    coco = scene_sets["coco"] / "scenes.json"
    doc = json.loads(coco.read_text())
    doc["images"].append({"id": 99, "file_name": "missing.jpg"})
    coco.write_text(json.dumps(doc))
    scenes, bad = list_scenes(coco.parent)
    assert len(scenes) == 4 and bad == [f"{coco}: no image missing.jpg beside it or in images/"]
    coco.write_text("{}")
    with pytest.raises(ValueError, match="not a COCO file"):
        list_scenes(coco.parent)

    meta = scene_sets["csv"] / "meta.csv"
    pd.read_csv(meta).drop(columns=["h"]).to_csv(meta, index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) h"):
        list_scenes(meta.parent)


def test_unknown_or_missing_layouts_fail_clearly(tmp_path, scene_sets):
    with pytest.raises(FileNotFoundError, match="no scene layout"):
        list_scenes(tmp_path / "nothing_here")
    with pytest.raises(ValueError, match="unknown scene format 'kitti'"):
        list_scenes(scene_sets["voc"], fmt="kitti")


def test_yolo_names_from_ultralytics_data_yaml(scene_sets):
    yolo = scene_sets["yolo"]
    names = (yolo / "classes.txt").read_text().split()
    (yolo / "classes.txt").unlink()
    (yolo / "data.yaml").write_text(
        "names:\n" + "".join(f"  {k}: {n}\n" for k, n in enumerate(names))
    )
    scenes, bad = list_scenes(yolo)
    assert bad == [] and {b.name for s in scenes for b in s.boxes} == set(names)
    with Image.open(scenes[0].image) as img:
        assert img.size == (WIDTH, HEIGHT)


def test_prepare_index_is_the_same_from_every_format(scene_sets, tmp_path):
    """Training crops: a YOLO, COCO or CSV source gives the VOC source's index, crop for crop."""
    from facemask.data.prepare import Source, build_index
    from tests.test_voc import CLASSES

    def index(fmt, root):
        frame, rejected, report = build_index(
            [Source("v", root, CLASSES, format=fmt)], crops_dir=tmp_path / f"crops_{fmt}",
            min_side=16, crop_margin=0.1, min_box=16, near_duplicate_distance=-1, workers=1,
        )  # fmt: skip
        keep = ["sha256", "label", "scene", "width", "height"]
        return frame[keep].sort_values("sha256").reset_index(drop=True), rejected, report

    want, _, report = index("voc", scene_sets["voc"])
    assert len(want) == 12 and report["scenes"] == 4
    for fmt in ("yolo", "coco", "csv"):
        got, rejected, _ = index(fmt, scene_sets[fmt])
        pd.testing.assert_frame_equal(got, want, obj=fmt)
    (scene_sets["yolo"] / "labels" / "scene1.txt").write_text("9 0.5 0.5 0.2 0.2\n")
    got, rejected, _ = index("yolo", scene_sets["yolo"])
    assert len(got) == 9  # scene1's three crops gone, and said why
    assert rejected["path"].str.endswith("scene1.txt").any()
    assert rejected["reason"].str.contains("class 9").any()
    with pytest.raises(ValueError, match="unknown format 'kitti'"):
        index("kitti", scene_sets["voc"])
