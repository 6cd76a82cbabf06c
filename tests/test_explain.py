"""Explainability: maps that point at the right place, every function on every backbone,
and the explain stage end to end on tiny synthetic data."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from facemask.explain import report
from facemask.explain.cams import (
    CAM_METHODS,
    QuickImputer,
    break_ties,
    capture_activations,
    compute_cam_mult_change,
    compute_cams,
    compute_lower_share,
    compute_occlusion,
    compute_region_share,
    compute_road,
    compute_weight_histograms,
    filter_tiles,
    find_first_conv,
    find_stage_layers,
    find_target_layer,
    find_target_layers,
    maximize_activations,
    overlay,
    pick_spread,
    top_channels,
)
from facemask.explain.figures import colorize, enlarge
from facemask.explain.report import (
    LIST_COLUMNS,
    describe_prediction,
    pick_cam_sample,
    pick_examples,
    plot_cam_grid,
)
from facemask.models.factory import KNOWN_MODELS, ModelCard, create_model, save_model
from stages import explain as stage
from tests.conftest import CLASSES, ROOT, draw_face

# grad-cam's ROAD calls np.argwhere on a tensor: numpy 2 deprecation, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")

SIZE = 32  # region-model images
REGION = np.zeros((SIZE, SIZE), bool)
REGION[SIZE // 2 :, : SIZE // 2] = True  # bottom-left: any flip or transpose moves it away


# --------------------------------------------------------------------------- a known focus
def make_region_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform noise everywhere; the class is only in REGION: a white 8 px square (1) or a
    black one (0) somewhere inside it. Nothing outside REGION tells the classes apart."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 3, SIZE, SIZE)).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        top, left = rng.integers(SIZE // 2, SIZE - 8 + 1), rng.integers(0, SIZE // 2 - 8 + 1)
        x[i, :, top : top + 8, left : left + 8] = float(y[i])
    return torch.from_numpy((x - 0.5) / 0.25), torch.from_numpy(y)


@pytest.fixture(scope="module")
def region_model() -> tuple[nn.Module, torch.Tensor, list[int]]:
    """A small baseline CNN trained to ~100 % on the region task; held-out images."""
    torch.manual_seed(0)
    x, y = make_region_data(512, seed=0)
    model, _ = create_model("facemask_cnn", 2, pretrained=False, widths=(8, 16, 32), drop_rate=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(100):
        idx = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = make_region_data(32, seed=1)
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() >= 0.95  # else the maps mean nothing
    return model, xt, yt.tolist()


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_cam_mass_is_on_the_region_that_decides(region_model, method):
    model, x, y = region_model
    cams = compute_cams(model, x, find_target_layer(model, SIZE), y, method)
    share = np.nanmean(compute_region_share(cams, REGION))
    assert share > 0.5, f"{method}: {share:.2f} of the mass on the decisive quarter"
    # The same check on a flipped map must fail: it tells right from wrong maps.
    assert np.nanmean(compute_region_share(cams[:, ::-1], REGION)) < 0.25
    assert np.nanmean(compute_lower_share(cams)) > 0.6  # REGION is in the lower half


def test_occlusion_mass_is_on_the_region_that_decides(region_model):
    model, x, y = region_model
    occ = compute_occlusion(model, x, y, patch=8, stride=4)
    assert occ.shape == (len(x), SIZE, SIZE)
    assert np.nanmean(compute_region_share(occ, REGION)) > 0.7
    # Outside the region a patch changes nothing the model uses.
    assert np.abs(occ[:, ~REGION]).max() < np.abs(occ[:, REGION]).max() / 2


def test_road_and_confidence_change_prefer_the_faithful_map(region_model):
    model, x, y = region_model
    x, y = x[:6], y[:6]
    cams = compute_cams(model, x, find_target_layer(model, SIZE), y)
    torch.manual_seed(0)
    good = compute_road(model, x, cams, y, (20, 80))
    bad = compute_road(model, x, 1 - cams, y, (20, 80))
    assert good["morf"].shape == good["lerf"].shape == (2, 6)
    assert good["combined"].mean() > 0.1 > bad["combined"].mean()
    assert good["morf"].mean() < good["lerf"].mean()  # removing what matters hurts more
    keep = compute_cam_mult_change(model, x, cams, y)
    assert (
        keep.shape == (6,) and keep.mean() > compute_cam_mult_change(model, x, 1 - cams, y).mean()
    )


def test_road_combined_is_the_libraries(region_model):
    """compute_road scores each direction once; its combined equals ROADCombined."""
    model, x, y = region_model
    x, y = x[:4], y[:4]
    cams = compute_cams(model, x, find_target_layer(model, SIZE), y)
    ours = compute_road(model, x, cams, y, (30, 70), seed=3)["combined"]
    targets = [ClassifierOutputSoftmaxTarget(t) for t in y]
    theirs = ROADCombined(percentiles=[30, 70])(x, break_ties(cams, 3), targets, model)
    np.testing.assert_allclose(ours, theirs, atol=0.02)  # only the imputation noise differs


def test_quick_imputer_is_the_librarys():
    rng = np.random.default_rng(0)
    img = torch.randn(3, 24, 24)
    mask = torch.from_numpy(np.float32(rng.random((24, 24)) < 0.4))
    mask[:10, :10] = 0  # a block, like a thresholded CAM
    torch.manual_seed(1)
    theirs = NoisyLinearImputer()(img, mask)
    torch.manual_seed(1)
    ours = QuickImputer()(img, mask)
    torch.testing.assert_close(ours, theirs)
    assert torch.equal(ours[:, mask > 0], img[:, mask > 0])  # kept pixels untouched
    assert not torch.equal(ours, img)


def test_break_ties_removes_exactly_the_share_asked_for():
    cams = np.zeros((1, 10, 10), np.float32)
    cams[0, :2] = 1  # 80 % ties at zero, as Grad-CAM's ReLU leaves them
    jittered = break_ties(cams)
    assert (jittered[0] < np.percentile(jittered[0], 20)).sum() == 20
    assert (cams[0] < np.percentile(cams[0], 20)).sum() == 0  # the library's view without it
    assert np.abs(jittered - cams).max() < 1e-4


def test_region_and_lower_share():
    maps = np.zeros((4, 4, 6), np.float32)
    maps[0, 2:] = 1  # all below the middle
    maps[1, :2] = 1  # all above
    maps[2] = 1
    maps[3, :2] = -5  # negative evidence only: nothing to attribute
    maps[3, 3, 0] = 0
    share = compute_lower_share(maps)
    np.testing.assert_allclose(share[:3], [1, 0, 0.5])
    assert np.isnan(share[3])
    region = np.zeros((4, 6), bool)
    region[0, 0] = True
    assert compute_region_share(maps[2:3], region)[0] == pytest.approx(1 / 24)


# --------------------------------------------------------------------------- every backbone
@pytest.fixture(scope="module", params=KNOWN_MODELS)
def backbone(request) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    model, _ = create_model(request.param, 2, pretrained=False)
    return request.param, model.eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_layers_are_found_on_every_backbone(backbone, batch):
    name, model = backbone
    layers = find_target_layers(model, 64)
    stages = find_stage_layers(model, 64)
    # One CAM layer per joined backbone (a+b), else one.
    assert len(layers) == name.count("+") + 1
    assert set(layers) <= set(dict(model.named_modules())), layers
    assert len(stages) >= 3, stages
    sides = [a.shape[-1] for a in capture_activations(model, batch, stages).values()]
    assert sides == sorted(sides, reverse=True) and sides[-1] > 1, (name, stages, sides)


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_cams_on_every_backbone(backbone, batch, method):
    _, model = backbone
    cams = compute_cams(model, batch, find_target_layers(model, 64), [0, 1], method)
    assert cams.shape == (2, 64, 64) and np.isfinite(cams).all()
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    image = np.full((64, 64, 3), 128, np.uint8)
    blended = overlay(image, cams[0])
    assert blended.shape == (64, 64, 3) and blended.dtype == np.uint8


def test_occlusion_on_every_backbone(backbone, batch):
    _, model = backbone
    occ = compute_occlusion(model, batch, [0, 1], patch=32, stride=32)
    assert occ.shape == (2, 64, 64) and np.isfinite(occ).all()
    # Four quadrants, each pixel under one patch: its value is the drop in p(target) with
    # its own quadrant greyed out, computed here directly.
    with torch.no_grad():
        base = model(batch).softmax(-1)
        for top, left in [(0, 0), (0, 32), (32, 0), (32, 32)]:
            grey = batch.clone()
            grey[:, :, top : top + 32, left : left + 32] = 0
            drop = base - model(grey).softmax(-1)
            quadrant = occ[:, top : top + 32, left : left + 32]
            for i, target in enumerate([0, 1]):
                np.testing.assert_allclose(quadrant[i], drop[i, target].item(), atol=1e-5)
    # Overlapping patches: each pixel gets the mean drop of the patches over it.
    half = compute_occlusion(model, batch[:1], [0], patch=32, stride=16)
    with torch.no_grad():
        drops = []
        for top, left in [(0, 0), (0, 16), (16, 0), (16, 16)]:  # every patch over (20, 20)
            grey = batch[:1].clone()
            grey[:, :, top : top + 32, left : left + 32] = 0
            drops.append((base[0, 0] - model(grey).softmax(-1)[0, 0]).item())
    assert half[0, 20, 20] == pytest.approx(np.mean(drops), abs=1e-5)


def test_feature_maps_on_every_backbone(backbone, batch):
    _, model = backbone
    layers = pick_spread(find_stage_layers(model, 64), 3)
    acts = capture_activations(model, batch, layers)
    assert list(acts) == layers or set(acts) == set(layers)
    for a in acts.values():
        assert a.shape[0] == 2 and a.ndim == 4 and torch.isfinite(a).all()
        picked = top_channels(a[0], 4)
        assert len(picked) == 4 and len(set(picked)) == 4
        means = a[0].mean((1, 2))
        assert means[picked[0]] == means.max()
        tile = enlarge(colorize(a[0, picked[0]].numpy()), 64)
        assert tile.dtype == np.uint8 and tile.shape[2] == 3 and tile.shape[0] >= 64


def test_filters_and_weights_on_every_backbone(backbone):
    _, model = backbone
    _, conv = find_first_conv(model)
    tiles = filter_tiles(conv)
    k = conv.kernel_size[0]
    assert tiles.shape == (conv.out_channels, k, k, 3) and tiles.dtype == np.uint8
    assert (tiles.reshape(len(tiles), -1).max(1) == 255).all()  # each stretched to its range
    names, edges, fractions = compute_weight_histograms(model, bins=20)
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert len(names) == n_layers and fractions.shape == (n_layers, 20) and len(edges) == 21
    np.testing.assert_allclose(fractions.sum(1), 1)
    assert edges[-1] == -edges[0] > 0


def test_activation_maximisation_on_every_backbone(backbone):
    _, model = backbone
    stages = find_stage_layers(model, 64)
    images, (before, after) = maximize_activations(
        model, stages[len(stages) // 2], [0, 1, 2, 3], (0.5,) * 3, (0.25,) * 3, size=32, steps=8
    )
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert images.min() < images.max()  # no longer flat grey
    # Ascent with random shifts is not monotone per channel, but it must gain overall.
    assert after.mean() > before.mean() and (after > before).sum() >= 2
    assert all(p.requires_grad for p in model.parameters())  # left as it was found


# --------------------------------------------------------------------------- the stage
def shrink(params: dict) -> dict:
    params = copy.deepcopy(params)
    params["explain"].update(
        cam_methods=["gradcam", "eigencam"],
        images=8,
        per_cell=2,
        road_images=2,
        road_percentiles=[50],
        low_confidence=0.8,
        gallery_max=4,
        occlusion={"images": 2, "wrong": 1, "patch": 0.5, "stride": 0.5},
        features={"layers": None, "images": 1, "channels": 2},
        maximize={"layer": None, "filters": 3, "size": 32, "steps": 2, "lr": 0.05},
        weight_bins=10,
    )
    return params


@pytest.fixture
def stage_inputs(tmp_path, monkeypatch) -> tuple[dict, pd.DataFrame]:
    """12 synthetic faces, a random baseline CNN, and predictions with known mistakes:
    rows 0 and 1 are copies (one duplicate group), both wrong."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        label = CLASSES[i % 2]
        path = Path(f"img/{i:02d}.png")
        path.parent.mkdir(exist_ok=True)
        draw_face(rng, label == "with_mask", 40).save(path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append({"path": str(path), "label": label, "group": i if i else 1, "sha256": sha})
    test = pd.DataFrame(rows)
    test.to_csv("test.csv", index=False)
    pred = test[["path", "label"]].copy()
    wrong = [0, 1, 5]
    pred["predicted"] = [
        CLASSES[1 - CLASSES.index(lab)] if i in wrong else lab
        for i, lab in enumerate(pred["label"])
    ]
    pred["confidence"] = [0.95, 0.7, 0.99, 0.6, 0.97, 0.55, 0.9, 0.99, 0.75, 0.99, 0.98, 0.96]
    pred["p_with_mask"] = np.where(
        pred["predicted"] == "with_mask", pred["confidence"], 1 - pred["confidence"]
    )
    pred["p_without_mask"] = 1 - pred["p_with_mask"]
    pred.to_csv("predictions.csv", index=False)
    torch.manual_seed(0)
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    save_model(model, ModelCard("facemask_cnn", CLASSES, 32, (0.5,) * 3, (0.25,) * 3), "m.st")
    params = shrink(yaml.safe_load((ROOT / "params.yaml").read_text()))
    return params, pred


def run_stage(params: dict, out: str) -> tuple[dict, stage.Outputs]:
    outs = stage.Outputs(
        Path(out) / "plots",
        Path(out) / "explain.json",
        Path(out) / "road.csv",
        Path(out) / "attention.csv",
        Path(out) / "weights.csv",
        Path(out) / "low.csv",
        Path(out) / "wrong.csv",
    )
    return stage.main(params, Path("m.st"), Path("predictions.csv"), Path("test.csv"), outs), outs


def picture(path: Path) -> np.ndarray:
    """A PNG as RGB pixels, after checking that something was drawn: many colours (tiles,
    maps, heatmaps, not only text) over a good part of the canvas."""
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 300, f"{path.name}: {colours} colours, nothing but text or blank"
    assert (pixels.min(-1) < 250).mean() > 0.1, f"{path.name}: mostly white"
    return pixels


def test_explain_stage_end_to_end(stage_inputs):
    params, pred = stage_inputs
    metrics, outs = run_stage(params, "a")

    pngs = sorted(p.name for p in outs.plots.glob("*.png"))
    expected = ["cam_gradcam", "cam_eigencam", "occlusion", "feature_maps", "filters"]
    expected += ["weights", "activation_max", "low_confidence", "misclassified"]
    assert pngs == sorted(f"{name}.png" for name in expected)
    for png in outs.plots.glob("*.png"):
        picture(png)
    # CAM grid: 2 classes x (correct, wrong) rows of per_cell tiles, 210 x 240 px a tile.
    height, width, _ = picture(outs.plots / "cam_gradcam.png").shape
    assert height == pytest.approx(4 * 240, rel=0.1) and width == pytest.approx(2 * 210, rel=0.2)
    # Occlusion: image, CAM and occlusion map in a row, one row per occluded image.
    height, width, _ = picture(outs.plots / "occlusion.png").shape
    assert height == pytest.approx(3 * 240, rel=0.1) and width == pytest.approx(3 * 210, rel=0.2)

    wrong = pd.read_csv(outs.misclassified)
    assert sorted(wrong["path"]) == sorted(pred.loc[[0, 1, 5], "path"])
    assert wrong["confidence"].is_monotonic_decreasing
    low = pd.read_csv(outs.low_confidence)
    assert sorted(low["path"]) == sorted(pred.loc[pred["confidence"] < 0.8, "path"])
    assert list(low.columns) == LIST_COLUMNS
    assert metrics["misclassified"] == 3
    assert metrics["images"]["gallery_misclassified"] == 2  # the two copies: one tile
    assert metrics["images"]["cam"] == 8 and metrics["images"]["road"] == 2
    assert metrics["images"]["occlusion"] == 3

    saved = json.loads(outs.metrics.read_text())
    assert saved == metrics
    road = pd.read_csv(outs.road)
    assert len(road) == 2 * 2 * 1 and set(road["percent_removed"]) == {50}
    attention = pd.read_csv(outs.attention)
    assert set(attention["map"]) == {"gradcam", "eigencam", "occlusion"}
    for method in ("gradcam", "eigencam"):
        m = saved[method]
        # One percentile: the JSON's mean per direction is the CSV's one row.
        rows = road[road["method"] == method].set_index("direction")["score"]
        assert m["road_morf"] == pytest.approx(rows["MoRF"], abs=1e-5)
        assert m["road_lerf"] == pytest.approx(rows["LeRF"], abs=1e-5)
        shares = attention[attention["map"] == method].set_index("class")
        assert m["lower_face_share"] == pytest.approx(
            {c: (None if np.isnan(v) else v) for c, v in shares["lower_share"].items()}
        )
        # Correct predictions only: 3 per class in the sample of 8 (2 wrong, 6 right);
        # fewer only where a map has no positive mass.
        assert (shares.loc[CLASSES, "n"] <= 3).all()
        assert shares.loc["all", "n"] == shares.loc[CLASSES, "n"].sum()
    assert attention.loc[attention["map"] == "eigencam", "n"].tolist() == [3, 3, 6]
    # Occlusion: the first 2 correct images of the sample (round-robin: one per class).
    assert attention.loc[attention["map"] == "occlusion", "n"].max() <= 2
    weights = pd.read_csv(outs.weights)
    assert weights["layer"].iloc[0] == "features.0" and (weights["std"] > 0).all()
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    assert list(weights["layer"]) == [
        n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]

    again, outs2 = run_stage(params, "b")  # same seed, same numbers
    assert again == metrics
    for a, b in [(outs.road, outs2.road), (outs.attention, outs2.attention)]:
        assert a.read_bytes() == b.read_bytes()


def test_cam_grid_puts_each_picture_in_its_cell(monkeypatch, tmp_path):
    """The one CAM grid of the plots and explain stages: rows class x (correct, wrong), each
    cell its first per_cell pictures in sample order with the CAM on top; gaps stay empty."""
    sample = pd.DataFrame(
        {
            "label": ["a", "a", "b", "a", "a", "b"],
            "predicted": ["a", "b", "b", "a", "a", "a"],
            "confidence": [0.9, 0.8, 0.7, 0.6, 0.55, 0.99],
        }
    )
    images = np.stack([np.full((8, 8, 3), 40 * i, np.uint8) for i in range(6)])
    cams = np.random.default_rng(0).uniform(0, 1, (6, 8, 8)).astype(np.float32)
    drawn = {}

    def fake_plot_grid(tiles, captions, path, **kwargs):
        drawn.update(tiles=tiles, captions=captions, **kwargs)

    monkeypatch.setattr(report, "plot_grid", fake_plot_grid)
    plot_cam_grid(sample, images, cams, ["a", "b"], 2, tmp_path / "g.png", "t", describe_prediction)
    assert drawn["row_labels"] == ["a: correct", "a: wrong", "b: correct", "b: wrong"]
    assert drawn["columns"] == 2 and drawn["title"] == "t"
    cells = [0, 3, 1, None, 2, None, 5, None]  # row 4 is a third correct "a": no room
    for tile, i in zip(drawn["tiles"], cells, strict=True):
        if i is None:
            assert tile is None
        else:
            np.testing.assert_array_equal(tile, overlay(images[i], cams[i]))
    assert drawn["colors"] == ["green", "green", "red", "black", "green", "black", "red", "black"]
    assert drawn["captions"][:3] == ["pred a 0.90", "pred a 0.60", "pred b 0.80"]
    plot_cam_grid(sample, images, cams, ["a", "b"], 2, tmp_path / "g.png", "t")
    assert drawn["captions"][2] == "true a /\npred b 0.80"  # the explain stage's caption


def test_pick_examples_fills_the_grid_cells_in_order():
    pred = pd.DataFrame(
        {
            "path": [f"p{i}" for i in range(9)],
            "label": ["a"] * 8 + ["b"],
            "predicted": ["a"] * 5 + ["b"] * 3 + ["b"],
            "confidence": [0.9, 0.8, 0.7, 0.6, 0.5, 0.55, 0.95, 0.75, 0.6],
        }
    )
    chosen = pick_examples(pred, ["a", "b"], 2, seed=0)
    assert len(chosen) == 2 + 2 + 1
    assert set(chosen["path"][:2]) <= {f"p{i}" for i in range(5)}  # a, correct: a sample
    assert list(chosen["path"][2:4]) == ["p6", "p7"]  # a, wrong: the most confident first
    assert list(chosen["path"][4:]) == ["p8"]  # b, correct; no wrong b
    samples = {tuple(pick_examples(pred, ["a", "b"], 2, seed=k)["path"][:2]) for k in range(6)}
    assert len(samples) > 1  # the correct ones are drawn by the seed


def test_share_by_class_averages_correct_predictions_only():
    sample = pd.DataFrame(
        {"label": ["a", "a", "b", "b", "a", "a"], "predicted": ["a", "a", "b", "a", "b", "a"]}
    )
    shares = np.array([0.2, 0.6, 1.0, 0.9, 0.0, np.nan])  # the NaN: a map with no mass
    rows = {r["class"]: r for r in report.share_by_class(sample, ["a", "b"], shares, "m")}
    assert [rows[c]["n"] for c in ("a", "b", "all")] == [2, 1, 3]
    assert rows["a"]["lower_share"] == pytest.approx(0.4)
    assert rows["b"]["lower_share"] == pytest.approx(1.0)
    assert rows["all"]["lower_share"] == pytest.approx(0.6)
    assert rows["b"]["label"] == "m: b"
    none = report.share_by_class(sample.assign(predicted="x"), ["a"], shares, "m")
    assert np.isnan(none[0]["lower_share"]) and none[0]["n"] == 0


def test_road_rows_label_the_share_removed():
    road = {
        "morf": np.array([[0.1, 0.3], [0.5, 0.7]]),  # (percentile, image)
        "lerf": np.array([[-0.1, -0.3], [0.0, 0.2]]),
    }
    rows = report.road_rows("m", [20, 80], road)
    got = [(r["direction"], r["percent_removed"], r["score"]) for r in rows]
    assert got == [("MoRF", 80, 0.2), ("MoRF", 20, 0.6), ("LeRF", 80, -0.2), ("LeRF", 20, 0.1)]
    assert rows[0]["label"] == "m MoRF 80% removed"


def test_cam_sample_is_balanced_unique_and_keeps_every_mistake():
    rng = np.random.default_rng(0)
    n = 60
    pred = pd.DataFrame(
        {
            "path": [f"p{i}" for i in range(n)],
            "group": [i // 2 for i in range(n)],  # every picture twice
            "label": [CLASSES[i % 4 // 2] for i in range(n)],
            "confidence": rng.uniform(0.5, 1, n),
        }
    )
    pred["predicted"] = pred["label"]
    pred.loc[[4, 9, 22], "predicted"] = CLASSES[1]  # wrong, with_mask true labels (rows 4, 9)
    sample = pick_cam_sample(pred, CLASSES, 12, seed=1)
    assert len(sample) == 12 and sample["group"].is_unique
    wrong = pred.drop_duplicates("group")
    wrong = wrong[wrong["label"] != wrong["predicted"]]
    assert set(wrong["path"]) <= set(sample["path"])
    assert (sample["label"].value_counts() == 6).all()
    assert list(sample["label"].iloc[:4]) == [CLASSES[0], CLASSES[1]] * 2  # round-robin
    assert set(sample["path"].iloc[-len(wrong) :]) == set(wrong["path"])  # wrong ones last
    assert sample.equals(pick_cam_sample(pred, CLASSES, 12, seed=1))
    assert not sample.equals(pick_cam_sample(pred, CLASSES, 12, seed=2))


def read_cmd(cmd: str) -> tuple[str, list[str], dict[str, str]]:
    """A stage's `python -m module pos... --flag value...` as (module, positionals, flags)."""
    words = cmd.split()
    words = words[words.index("-m") + 1 :]
    module, rest = words[0], words[1:]
    first = next((i for i, w in enumerate(rest) if w.startswith("--")), len(rest))
    flags = rest[first:]
    assert len(flags) % 2 == 0 and all(f.startswith("--") for f in flags[::2]), cmd
    return module, rest[:first], dict(zip(flags[::2], flags[1::2], strict=True))


def explain_spec() -> tuple[dict, dict[str, dict]]:
    """evaluations/dvc.yaml's explain stage, and its declared outputs with their options."""
    spec = yaml.safe_load((ROOT / "evaluations" / "dvc.yaml").read_text())["stages"]["explain"]
    declared = {}
    for kind in ("outs", "metrics", "plots"):
        for o in spec.get(kind, []):
            path, opts = next(iter(o.items())) if isinstance(o, dict) else (o, {})
            declared[path] = opts or {}
    return spec, declared


def test_dvc_yaml_declares_what_the_stage_writes():
    spec, declared = explain_spec()
    module, inputs, flags = read_cmd(spec["cmd"])
    assert module == "stages.explain"
    # Each output flag of the cmd line is declared, and each declared output is a flag.
    assert sorted(flags.values()) == sorted(declared)
    assert set(inputs) <= set(spec["deps"]) and "stages/explain.py" in spec["deps"]
    # Pictures are DVC-cached (they show faces); only the numbers live in git.
    for path, opts in declared.items():
        assert opts.get("cache", True) == (not path.endswith(".csv") and "json" not in path)
    assert set(spec["params"]) == {"seed", "explain"}


@pytest.mark.slow
def test_explain_cmd_line_writes_what_dvc_yaml_declares(stage_inputs, tmp_path):
    """The stage run from its own dvc.yaml command line (inputs swapped for synthetic ones)
    writes every declared output and nothing else; each plot's x and y are CSV columns."""
    params, _ = stage_inputs
    spec, declared = explain_spec()
    module, inputs, flags = read_cmd(spec["cmd"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["m.st", "predictions.csv", "test.csv"]
    assert len(args) == len(inputs)
    for flag, path in flags.items():
        args += [flag, f"out/{path}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    written = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
    for path, opts in declared.items():
        assert any(w == path or w.startswith(path + "/") for w in written), path
        if "x" in opts:  # a DVC plot of a CSV: the columns it draws must exist
            columns = set(pd.read_csv(out / path).columns)
            assert {opts["x"], opts["y"]} <= columns, (path, columns)
    assert all(any(w == d or w.startswith(d + "/") for d in declared) for w in written)


def test_join_split_takes_the_splits_columns_over_the_predictions():
    from facemask.explain.report import join_split

    pred = pd.DataFrame({"path": ["a", "b"], "predicted": ["x", "y"], "sha256": ["old", "old"]})
    test = pd.DataFrame({"path": ["b", "a"], "group": [1, 0], "sha256": ["hb", "ha"]})
    out = join_split(pred, test)
    assert out["sha256"].tolist() == ["ha", "hb"] and out["group"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="c is in the predictions"):
        join_split(pd.concat([pred, pd.DataFrame({"path": ["c"]})]), test)
