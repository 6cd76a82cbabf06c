"""The no-face re-scorer: its inputs, mining rows from scenes, fitting, the operating point,
its file, the serving chain dropping what it calls no face, and the detect pipeline's stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from facemask.cli import main as cli_main
from facemask.detection import finders as detect
from facemask.detection.mining import load_results, load_train_valid, save_results
from facemask.detection.noface import NoFaceScorer, candidates, design, fit_noface, sweep
from facemask.detection.scoring import SceneResult
from facemask.params import ConfigError, load_stage_params
from facemask.serving.inputs import Frame
from facemask.serving.stream import answer_frames
from tests.conftest import ROOT, params_with, scene

CLASSES = ["with_mask", "without_mask"]
MAP = {"with_mask": "with_mask", "without_mask": "without_mask"}


def passthrough(threshold: float, model_sha256: str = "") -> NoFaceScorer:
    """A re-scorer whose P(face) is the detector score itself: sigmoid(logit(score))."""
    one = np.ones(4)
    coef = np.array([1.0, 0.0, 0.0, 0.0])
    trained = {"detector": "two", "threshold": 0.1, "upscale": 1.0}
    return NoFaceScorer(np.zeros(4), one, coef, 0.0, threshold, "confidence", trained, model_sha256)


def result(truth, boxes, scores, probs=None, features=None, name="s") -> SceneResult:
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    probs = np.full((len(boxes), 2), 0.5) if probs is None else np.asarray(probs, float)
    return SceneResult(name, np.asarray(truth, float).reshape(-1, 4),
                       ["with_mask"] * len(truth), boxes, np.asarray(scores, float), probs,
                       [CLASSES[int(k)] for k in probs.argmax(1)], None, features)  # fmt: skip


def test_confidence_inputs_by_hand():
    x = design("confidence", [0.5, 0.8], [[0, 0, 10, 4], [0, 0, 3, 7]], [[0.5, 0.5], [1.0, 0.0]])
    assert x[:, 0] == pytest.approx([0.0, np.log(4)])  # logit of the detector score
    assert x[:, 1] == pytest.approx(np.log1p([10, 7]))  # the box's longer side
    assert x[:, 2] == pytest.approx([0.5, 1.0])  # top probability
    assert x[:, 3] == pytest.approx([np.log(2), 0.0], abs=1e-6)  # entropy
    with pytest.raises(ValueError, match="features"):
        design("features", [0.5], [[0, 0, 1, 1]], [[1, 0]])
    with pytest.raises(ValueError, match="one of confidence, features"):
        design("pixels", [0.5], [[0, 0, 1, 1]], [[1, 0]])


def test_candidates_label_boxes_by_overlap_and_skip_empty_scenes():
    truth = [[0, 0, 10, 10]]
    r = result(truth, [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.9, 0.5, 0.4],
               features=np.arange(6.0).reshape(3, 2))  # fmt: skip
    empty = result(truth, [], [], features=None, name="empty")
    rows = candidates([empty, r], face_iou=0.5)
    # IoU of the shifted box: 81 / 119 = 0.68 >= 0.5; the far box matches nothing.
    assert rows["face"].tolist() == [True, True, False]
    assert rows["scene"].tolist() == [1, 1, 1] and rows["features"].shape == (3, 2)
    with pytest.raises(ValueError, match="keep_features"):
        candidates([result(truth, [[0, 0, 1, 1]], [0.5])], 0.5)


def test_fit_learns_what_is_not_a_face():
    rng = np.random.default_rng(0)
    n = 400
    face = rng.random(n) < 0.5
    # Faces: confident classifier answers; non-faces: near 50/50, at the same detector scores.
    top = np.where(face, rng.uniform(0.85, 1.0, n), rng.uniform(0.5, 0.65, n))
    probs = np.stack([top, 1 - top], 1)
    rows = {"scores": rng.uniform(0.2, 0.9, n), "boxes": np.tile([0, 0, 20, 20], (n, 1)),
            "probs": probs, "features": None, "face": face}  # fmt: skip
    scorer = fit_noface(rows, "confidence", 1.0, 0)
    p = scorer.face_probs(rows["scores"], rows["boxes"], probs)
    assert p[face].min() > p[~face].max()  # separable: every face ranks above every non-face
    with pytest.raises(ValueError, match="0 faces and 400 non-faces"):
        fit_noface({**rows, "face": np.zeros(n, bool)}, "confidence", 1.0, 0)


def test_sweep_counts_found_and_false_boxes_at_each_threshold():
    truth = [[0, 0, 10, 10]]
    r = result(truth, [[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], probs=[[0.9, 0.1]] * 2)
    rows = sweep([r], [np.array([0.9, 0.4])], MAP, CLASSES, [0.3, 0.5, 0.95])
    assert [x["found_and_right"] for x in rows] == [1.0, 1.0, 0.0]
    assert [x["false_boxes_per_scene"] for x in rows] == [1.0, 0.0, 0.0]
    assert [x["f1"] for x in rows] == [pytest.approx(2 / 3, abs=1e-4), 1.0, 0.0]


def test_scorer_file_round_trip_and_the_classifier_it_belongs_to(tmp_path):
    scorer = passthrough(0.7, model_sha256="0" * 64)
    scorer.save(tmp_path / "nf.safetensors")
    back = NoFaceScorer.load(tmp_path / "nf.safetensors")
    args = ([0.3, 0.8], [[0, 0, 5, 5]] * 2, [[0.5, 0.5]] * 2)
    assert back.face_probs(*args) == pytest.approx(scorer.face_probs(*args))
    assert back.threshold == 0.7 and back.detector == scorer.detector
    (tmp_path / "model.bin").write_bytes(b"another classifier")
    with pytest.raises(ValueError, match="another classifier than"):
        back.check_model(tmp_path / "model.bin")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file of ours")
    with pytest.raises(ValueError, match=r"junk\.safetensors: not a no-face re-scorer"):
        NoFaceScorer.load(tmp_path / "junk.safetensors")


class Engine:
    """Probabilities from the crop's mean brightness; no features (a confidence re-scorer)."""

    class card:  # the attribute name serving code reads
        classes, image_size = CLASSES, 16

    def __call__(self, crops):
        m = crops.reshape(len(crops), -1).mean(1) / 255
        return np.stack([m, 1 - m], 1).astype(np.float32)


class Boxes:
    def detect(self, rgb):
        return [((0.0, 0.0, 20.0, 20.0), 0.9), ((30.0, 0.0, 50.0, 20.0), 0.4)]


def test_the_chain_drops_and_counts_what_the_rescorer_calls_no_face():
    def frames():  # the chain drops each frame's pixels once answered
        return [Frame(f"f{i}", None, np.full((40, 60, 3), 100, np.uint8)) for i in range(3)]

    answers = list(answer_frames(frames(), Engine(), Boxes(), 0.0, 4, 0.0, False, passthrough(0.5)))
    assert [len(a.faces) for a in answers] == [1, 1, 1]
    assert [a.no_face for a in answers] == [1, 1, 1]
    assert answers[0].faces[0].face_score == pytest.approx(0.9)
    wants_features = passthrough(0.5)
    wants_features.inputs = "features"
    with pytest.raises(ValueError, match="reads the classifier's features"):
        list(answer_frames(frames(), Engine(), Boxes(), 0.0, 4, 0.0, False, wants_features))
    plain = list(answer_frames(frames(), Engine(), Boxes(), 0.0, 4, 0.0, False))
    assert [len(a.faces) for a in plain] == [2, 2, 2] and plain[0].no_face == 0


def test_mined_scenes_round_trip(tmp_path):
    a = result([[0, 0, 10, 10]], [[0, 0, 9, 9]], [0.8], features=np.ones((1, 3)), name="a")
    b = result([], [], [], features=None, name="b")
    save_results(tmp_path / "c.npz", [a, b], ["train", "valid"])
    back, split = load_results(tmp_path / "c.npz")
    assert split.tolist() == ["train", "valid"] and [r.scene for r in back] == ["a", "b"]
    assert back[0].boxes.tolist() == a.boxes.tolist() and back[0].features.shape == (1, 3)
    assert len(back[1].boxes) == 0 and len(back[1].truth) == 0


def test_train_valid_scenes_are_split_and_both_required(tmp_path):
    a, b, c = (
        result([[0, 0, 9, 9]], [[0, 0, 9, 9]], [0.8], features=np.ones((1, 3)), name=n)
        for n in "abc"
    )
    save_results(tmp_path / "c.npz", [a, b, c], ["valid", "train", "valid"])
    train, valid = load_train_valid(tmp_path / "c.npz")
    assert [r.scene for r in train] == ["b"] and [r.scene for r in valid] == ["a", "c"]
    save_results(tmp_path / "only.npz", [a, b], ["train", "train"])
    with pytest.raises(ValueError, match=r"only\.npz: needs train and valid scenes"):
        load_train_valid(tmp_path / "only.npz")


def test_noface_stage_fits_chooses_and_ties_to_the_model(tmp_path, model_file):
    from stages import noface as stage

    rng = np.random.default_rng(1)
    scenes = []
    for i in range(12):
        truth = [[0, 0, 20, 20]]
        boxes = [[0, 0, 20, 20], [40, 40, 60, 60], [70, 0, 90, 20]]
        probs = [[0.97, 0.03], [0.55 + rng.uniform(0, 0.1), 0.4], [0.5, 0.5]]
        scores = rng.uniform(0.3, 0.9, 3)
        scenes.append(result(truth, boxes, scores, probs, np.zeros((3, 2)), f"s{i}"))
    save_results(tmp_path / "c.npz", scenes, ["train"] * 8 + ["valid"] * 4)
    dp = load_stage_params(ROOT / "params.yaml", ["detect"]).detect
    out, metrics = tmp_path / "nf.safetensors", tmp_path / "m.json"
    m = stage.main(params_with(scenes={"classes": MAP}), dp, tmp_path / "c.npz", model_file, out,
                   metrics, tmp_path / "sweep.csv")  # fmt: skip
    assert json.loads(metrics.read_text()) == json.loads(json.dumps(m))
    assert m["train"] == {"scenes": 8, "boxes": 24, "faces": 8, "non_faces": 16}
    assert m["chosen"]["found_and_right"] == 1.0 and m["chosen"]["false_boxes_per_scene"] == 0.0
    scorer = NoFaceScorer.load(out)
    assert scorer.threshold in dp.operating_points and scorer.detector["threshold"] == dp.threshold
    scorer.check_model(model_file)  # the classifier it was fitted for passes


def test_detect_params_are_checked(tmp_path):
    good = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert (
        load_stage_params(ROOT / "params.yaml", ["detect"]).detect.inputs
        == good["detect"]["inputs"]
    )
    bad = {"detect": {**good["detect"], "treshold": 0.3}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"p.yaml: detect.treshold: unknown key \(allowed here"):
        load_stage_params(tmp_path / "p.yaml", ["detect"])
    bad = {"detect": {**good["detect"], "operating_points": [0.5, 0.3]}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="operating_points: must increase"):
        load_stage_params(tmp_path / "p.yaml", ["detect"])


def test_predict_with_rescorer_drops_counts_and_refuses_another_model(tmp_path, model_file, capsys):
    from facemask.detection.noface import file_sha256

    assert "two" in detect.DETECTORS  # the stub detector of tests/conftest.py
    scene(np.random.default_rng(0)).save(tmp_path / "s.jpg")
    scorer = passthrough(0.7, file_sha256(model_file))  # FACES score 0.9 and 0.6
    scorer.save(tmp_path / "nf.safetensors")
    argv = ["predict", str(tmp_path / "s.jpg"), "--model", str(model_file), "--detector", "two",
            "--no-face", str(tmp_path / "nf.safetensors"), "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 2  # the header and the one face kept
    assert "1 faces" in err and "1 boxes called no face" in err
    assert cli_main([*argv, "--face-threshold", "0.5"]) == 0
    assert len(capsys.readouterr()[0].strip().splitlines()) == 3  # both kept
    passthrough(0.7, "f" * 64).save(tmp_path / "other.safetensors")
    argv[argv.index(str(tmp_path / "nf.safetensors"))] = str(tmp_path / "other.safetensors")
    assert cli_main(argv) == 2
    assert (
        "other.safetensors: trained on the features of another classifier" in capsys.readouterr()[1]
    )
    assert cli_main([*argv, "--crops"]) == 2
    assert "does not go with --crops" in capsys.readouterr()[1]
