"""Stage synthesize: masks placed from landmarks, occluders, provenance, train-only rows."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw

from facemask.params import ConfigError, SynthesizeParams, stage_params
from facemask.synthesis.draw import (
    OCCLUDERS,
    PLACEMENTS,
    TEMPLATES,
    draw_mask,
    draw_occluder,
    placement_quad,
)
from facemask.synthesis.landmarks import FaceFrame, Landmarks, crop_face_box, find_landmarks
from tests.conftest import ROOT

# A 64 px face: eyes at y 22, the base of the nose at y 34 (v = 1), mouth near y 40.
LM = Landmarks((24.0, 22.0), (40.0, 22.0), (32.0, 34.0))
SPEC = yaml.safe_load((ROOT / "params.yaml").read_text())["synthesize"]


def plain_face(size: int = 64) -> Image.Image:
    """A light, flat face on a mid-grey ground: anything dark drawn on it shows."""
    img = Image.new("RGB", (size, size), (120, 120, 120))
    d = ImageDraw.Draw(img)
    d.ellipse([12, 4, 52, 60], fill=(225, 190, 165))
    for x, y in (LM.eye_left, LM.eye_right):
        d.ellipse([x - 2, y - 1, x + 2, y + 1], fill=(40, 30, 30))
    return img


def drawn_rows(before: Image.Image, after: Image.Image, x: int) -> np.ndarray:
    """Rows where column x changed by more than noise."""
    a = np.asarray(before, np.float32)[:, x].mean(axis=1)
    b = np.asarray(after, np.float32)[:, x].mean(axis=1)
    return np.nonzero(np.abs(a - b) > 40)[0]


@pytest.mark.parametrize("seed", range(5))
def test_mask_top_edge_sits_below_the_nose_when_worn_under_it_and_above_when_correct(seed):
    face = plain_face()
    nose_x, nose_y = int(LM.nose[0]), LM.nose[1]
    for placement, below in (("under_nose", True), ("correct", False), ("under_chin", True)):
        out = draw_mask(face, FaceFrame(LM), placement, "black", np.random.default_rng(seed)).image
        rows = drawn_rows(face, out, nose_x)
        assert len(rows) > 5, placement  # a mask was drawn across the nose line's column
        top = rows.min()
        assert (top > nose_y) == below, f"{placement}: top edge at y={top}, nose at y={nose_y}"
    under_chin = draw_mask(face, FaceFrame(LM), "under_chin", "black", np.random.default_rng(seed))
    mouth_y = FaceFrame(LM).point(0, FaceFrame.MOUTH)[1]
    assert drawn_rows(face, under_chin.image, nose_x).min() > mouth_y  # the mouth stays bare


def test_placement_quads_follow_the_face_frame():
    frame = FaceFrame(LM)
    correct = placement_quad(frame, "correct")
    under = placement_quad(frame, "under_nose")
    assert correct[:2, 1].max() < LM.nose[1] < under[:2, 1].min()
    # A face rolled 90 degrees (eyes one above the other) rolls the mask with it.
    rolled = FaceFrame(Landmarks((40.0, 24.0), (40.0, 40.0), (28.0, 32.0)))
    quad = placement_quad(rolled, "under_nose")
    assert quad[:2, 0].max() < 28  # the top edge is beyond the nose, on the far side of it
    hanging = placement_quad(frame, "one_ear", np.random.default_rng(0))
    top_edge = hanging[1] - hanging[0]
    assert abs(np.degrees(np.arctan2(top_edge[1], top_edge[0]))) > 30  # hangs: not level


def test_names_in_params_match_what_draw_knows():
    from typing import get_args

    from facemask.params import Occluder, Placement, Template

    assert set(get_args(Placement)) == set(PLACEMENTS)
    assert set(get_args(Template)) == set(TEMPLATES)
    assert set(get_args(Occluder)) == set(OCCLUDERS)


@pytest.mark.parametrize("kind", OCCLUDERS)
def test_each_occluder_draws_something_on_the_face(kind):
    face = plain_face()
    drawn = draw_occluder(face, FaceFrame(LM), kind, np.random.default_rng(1))
    diff = np.abs(np.asarray(drawn.image, np.float32) - np.asarray(face, np.float32)).max(axis=2)
    assert (diff > 40).sum() > 20, kind
    x0, y0, x1, y1 = drawn.box
    assert 0 <= x0 < x1 <= 64 + 64 and y1 > y0  # a box around what was drawn
    assert drawn.detail.startswith(kind)


def test_dlib_landmarks_on_a_drawn_face_are_in_order():
    """The real model on a tiny drawn face: eyes left to right, the nose below them."""
    rng = np.random.default_rng(0)
    from tests.conftest import draw_face

    img = draw_face(rng, masked=False, size=96)
    lm = find_landmarks(np.asarray(img), (0, 0, 96, 96))
    assert lm.eye_left[0] < lm.eye_right[0]
    assert lm.nose[1] > min(lm.eye_left[1], lm.eye_right[1])


def test_crop_face_box_undoes_the_crop_margin():
    # A 100 px box grown by 0.2 of its side each way is a 140 px crop; the box is its middle.
    assert crop_face_box(140, 140, 0.2) == pytest.approx((20, 20, 120, 120))


# -- the stage --------------------------------------------------------------------------------


def split_folder(tmp_path: Path, n: int = 6) -> Path:
    """train/valid/test CSVs of box-annotated crops (faces drawn at 96 px), bare and masked."""
    from tests.conftest import draw_face

    rng = np.random.default_rng(3)
    rows = []
    for split in ("train", "valid", "test"):
        for i in range(n):
            label = "without_mask" if i % 2 else "with_mask"
            path = tmp_path / "crops" / f"{split}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            draw_face(rng, label == "with_mask", 96).save(path)
            rows.append(
                {
                    "path": path.as_posix(),
                    "label": label,
                    "source": "crowd",
                    "group": len(rows),
                    "copies": 1,
                    "scene": f"crowd/scene{i}",
                    "fixed_split": None,
                    "width": 96,
                    "height": 96,
                    "format": "PNG",
                    "mode": "RGB",
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "phash": "0" * 64,
                    "published_label": label,
                    "split": split,
                }
            )
    df = pd.DataFrame(rows)
    out = tmp_path / "splits"
    out.mkdir()
    for split, part in df.groupby("split"):
        part.drop(columns="split").to_csv(out / f"{split}.csv", index=False)
    return out


def stage_params_dict(**synth) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["classes"] = ["with_mask", "without_mask", "mask_worn_incorrectly"]
    raw["prepare"]["workers"] = 1
    spec = {**SPEC, "sources": ["crowd"], "masks_per_face": 2, "occluders_per_face": 1}
    spec["placements"] = {p: "mask_worn_incorrectly" for p in PLACEMENTS} | {"correct": "with_mask"}
    spec.update(synth)
    raw["synthesize"] = spec
    return raw


def test_stage_writes_train_only_rows_with_provenance(tmp_path):
    from stages import synthesize

    splits = split_folder(tmp_path)
    out = tmp_path / "synth"
    report = synthesize.main(
        stage_params_dict(),
        splits / "train.csv",
        out,
        tmp_path / "s.json",
        tmp_path / "gallery.png",
    )
    index = pd.read_csv(out / "index.csv")
    train = pd.read_csv(splits / "train.csv")
    bare = train[train["label"] == "without_mask"]
    assert report["faces"] == len(bare) == 3
    assert len(index) == 3 * 3 and report["pictures"] == 9  # 2 masks + 1 occluder each
    # Drawn on training bare faces only: nothing of valid or test, no masked face reused.
    assert set(index["synth_from"]) == set(bare["path"])
    held_out = pd.concat([pd.read_csv(splits / f"{s}.csv") for s in ("valid", "test")])
    assert not set(index["synth_from"]) & set(held_out["path"])
    assert not set(index["sha256"]) & set(held_out["sha256"])
    assert (index["fixed_split"] == "train").all() and (index["source"] == "synthetic").all()
    # Provenance: the source picture, its source, what was drawn, where.
    assert (index["synth_source"] == "crowd").all()
    for row in index.itertuples():
        assert Path(row.path).is_file() and Path(row.synth_from).is_file()
        x0, y0, x1, y1 = map(int, row.synth_box.split())
        assert 0 <= x0 < x1 <= row.width and 0 <= y0 < y1 <= row.height
        img = np.asarray(Image.open(row.path), np.float32)
        src = np.asarray(Image.open(row.synth_from).convert("RGB"), np.float32)
        inside = np.abs(img - src)[y0:y1, x0:x1].mean()
        outside = np.abs(img - src).sum() - np.abs(img - src)[y0:y1, x0:x1].sum()
        assert inside > 5 and outside == 0, row.synth_kind  # changed inside the box only
    # Occluders never change the label; each mask's label follows its placement.
    occluded = index[index["synth_kind"].isin(OCCLUDERS)]
    assert len(occluded) == 3 and (occluded["label"] == "without_mask").all()
    masks = index[~index["synth_kind"].isin(OCCLUDERS)]
    expect = masks["synth_kind"].map(
        lambda k: "with_mask" if k == "correct" else "mask_worn_incorrectly"
    )
    assert (masks["label"] == expect).all()
    assert (tmp_path / "gallery.png").is_file()


def test_stage_is_reproducible_and_off_means_empty(tmp_path):
    from stages import synthesize

    splits = split_folder(tmp_path)
    a = synthesize.main(
        stage_params_dict(), splits / "train.csv", tmp_path / "a", tmp_path / "a.json"
    )
    b = synthesize.main(
        stage_params_dict(), splits / "train.csv", tmp_path / "b", tmp_path / "b.json"
    )
    assert a["pictures"] == b["pictures"] > 0
    ia, ib = pd.read_csv(tmp_path / "a" / "index.csv"), pd.read_csv(tmp_path / "b" / "index.csv")
    assert ia["sha256"].tolist() == ib["sha256"].tolist()  # same seed, same pictures
    off = stage_params_dict(masks_per_face=0, occluders_per_face=0)
    synthesize.main(off, splits / "train.csv", tmp_path / "off", tmp_path / "off.json")
    empty = pd.read_csv(tmp_path / "off" / "index.csv")
    assert empty.empty and "synth_from" in empty.columns
    small = stage_params_dict(min_side=97)  # the faces are 96 px: too small to draw on
    report = synthesize.main(small, splits / "train.csv", tmp_path / "sm", tmp_path / "sm.json")
    assert report["faces"] == 0 and report["pictures"] == 0


def test_train_reads_synthetic_rows_after_its_own(tmp_path):
    from facemask.data.cache import load_split

    splits = split_folder(tmp_path)
    from stages import synthesize

    synthesize.main(stage_params_dict(), splits / "train.csv", tmp_path / "s", tmp_path / "s.json")
    classes = ["with_mask", "without_mask", "mask_worn_incorrectly"]
    df, x, _ = load_split(splits / "train.csv", classes, 32, [tmp_path / "s" / "index.csv"])
    assert len(df) == 6 + 9 and x.shape[0] == 15
    assert (df["source"].iloc[6:] == "synthetic").all()
    alone, _, _ = load_split(splits / "train.csv", classes, 32)
    assert alone.dtypes.equals(
        load_split(splits / "train.csv", classes, 32, [_empty_index(tmp_path, splits)])[0].dtypes
    )  # an empty synthetic index changes nothing


def _empty_index(tmp_path: Path, splits: Path) -> Path:
    from stages import synthesize

    off = stage_params_dict(masks_per_face=0, occluders_per_face=0)
    synthesize.main(off, splits / "train.csv", tmp_path / "e", tmp_path / "e.json")
    return tmp_path / "e" / "index.csv"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"placements": {"sideways": "mask_worn_incorrectly"}}, "synthesize.placements.sideways"),
        ({"templates": ["kn95"]}, "synthesize.templates[0]"),
        ({"templates": []}, "templates: empty"),
        ({"occluders": ["umbrella"]}, "synthesize.occluders[0]"),
        ({"occluders": []}, "occluders: empty"),
        ({"colour": "red"}, "synthesize.colour: unknown key"),
    ],
)
def test_bad_spec_fails_naming_the_key(change, key):
    raw = stage_params_dict(**change)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        stage_params(raw, ["synthesize"])


def test_a_label_outside_the_classes_names_its_key(tmp_path):
    from stages import synthesize

    splits = split_folder(tmp_path)
    raw = stage_params_dict()
    raw["classes"] = ["with_mask", "without_mask"]  # the binary task: no worn-wrong class
    with pytest.raises(ConfigError, match=r"synthesize\.placements\.under_nose"):
        synthesize.main(raw, splits / "train.csv", tmp_path / "x", tmp_path / "x.json")
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_cli_bad_spec_exits_2_with_one_line(tmp_path):
    splits = split_folder(tmp_path)
    raw = stage_params_dict(templates=["kn95"])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    cmd = [
        sys.executable,
        "-m",
        "stages.synthesize",
        str(splits / "train.csv"),
        "--params",
        str(params),
        "--out",
        str(tmp_path / "o"),
        "--report",
        str(tmp_path / "o.json"),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert str(params) in done.stderr and "synthesize.templates[0]" in done.stderr


def test_default_binary_spec_draws_occluders_only():
    spec = SynthesizeParams.model_validate(SPEC)
    assert spec.masks_per_face == 0 and spec.occluders_per_face == 1
    assert spec.occluder_label == "without_mask"


def test_masks_are_shared_equally_between_labels_not_placements():
    """One correct placement and three wrong ones: half the masks still come out correct, so
    a drawn mask's look does not tell its class."""
    from facemask.synthesis.make import plan

    train = pd.DataFrame({
        "path": [f"f{i}.png" for i in range(400)], "label": "without_mask", "source": "crowd",
        "group": range(400), "scene": "s", "width": 64, "height": 64,
        "sha256": [hashlib.sha256(str(i).encode()).hexdigest() for i in range(400)],
    })  # fmt: skip
    spec = stage_params_dict(masks_per_face=1, occluders_per_face=0)["synthesize"]
    jobs = plan(train, SynthesizeParams.model_validate(spec), 42, {})
    labels = pd.Series([d[2] for j in jobs for d in j.draws])
    assert len(labels) == 400
    assert 0.43 < (labels == "with_mask").mean() < 0.57
    kinds = pd.Series([d[0] for j in jobs for d in j.draws if d[2] != "with_mask"])
    assert set(kinds) == {"under_nose", "under_chin", "one_ear"}
