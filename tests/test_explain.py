"""Explainability: maps that point at the right place, every function on every backbone,
and the explain stage end to end on tiny synthetic data."""

from __future__ import annotations

import copy
import hashlib
import json
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
    occ = compute_occlusion(model, batch, [0, 1], patch=32, stride=16)
    assert occ.shape == (2, 64, 64) and np.isfinite(occ).all()
    assert np.abs(occ).max() <= 1  # differences of probabilities


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


def test_explain_stage_end_to_end(stage_inputs):
    params, pred = stage_inputs
    metrics, outs = run_stage(params, "a")

    pngs = sorted(p.name for p in outs.plots.glob("*.png"))
    expected = ["cam_gradcam", "cam_eigencam", "occlusion", "feature_maps", "filters"]
    expected += ["weights", "activation_max", "low_confidence", "misclassified"]
    assert pngs == sorted(f"{name}.png" for name in expected)
    for png in outs.plots.glob("*.png"):
        with Image.open(png) as im:
            assert im.size[0] > 100 and im.size[1] > 100

    wrong = pd.read_csv(outs.misclassified)
    assert sorted(wrong["path"]) == sorted(pred.loc[[0, 1, 5], "path"])
    assert wrong["confidence"].is_monotonic_decreasing
    low = pd.read_csv(outs.low_confidence)
    assert sorted(low["path"]) == sorted(pred.loc[pred["confidence"] < 0.8, "path"])
    assert list(low.columns) == stage.LIST_COLUMNS
    assert metrics["misclassified"] == 3
    assert metrics["images"]["gallery_misclassified"] == 2  # the two copies: one tile
    assert metrics["images"]["cam"] == 8 and metrics["images"]["road"] == 2
    assert metrics["images"]["occlusion"] == 3

    saved = json.loads(outs.metrics.read_text())
    assert saved == metrics
    for method in ("gradcam", "eigencam"):
        m = saved[method]
        assert -1 <= m["road_morf"] <= 1 and -1 <= m["road_lerf"] <= 1
        assert m["road_combined"] == pytest.approx((m["road_lerf"] - m["road_morf"]) / 2, abs=1e-4)
        assert set(m["lower_face_share"]) == {*CLASSES, "all"}
    road = pd.read_csv(outs.road)
    assert len(road) == 2 * 2 * 1 and set(road["percent_removed"]) == {50}
    attention = pd.read_csv(outs.attention)
    assert set(attention["map"]) == {"gradcam", "eigencam", "occlusion"}
    shares = attention["lower_share"].dropna()
    assert len(shares) and shares.between(0, 1).all()
    weights = pd.read_csv(outs.weights)
    assert weights["layer"].iloc[0] == "features.0" and (weights["std"] > 0).all()

    again, outs2 = run_stage(params, "b")  # same seed, same numbers
    assert again == metrics
    for a, b in [(outs.road, outs2.road), (outs.attention, outs2.attention)]:
        assert a.read_bytes() == b.read_bytes()


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
    sample = stage.pick_cam_sample(pred, CLASSES, 12, seed=1)
    assert len(sample) == 12 and sample["group"].is_unique
    wrong = pred.drop_duplicates("group")
    wrong = wrong[wrong["label"] != wrong["predicted"]]
    assert set(wrong["path"]) <= set(sample["path"])
    assert (sample["label"].value_counts() == 6).all()
    assert list(sample["label"].iloc[:4]) == [CLASSES[0], CLASSES[1]] * 2  # round-robin
    assert set(sample["path"].iloc[-len(wrong) :]) == set(wrong["path"])  # wrong ones last
    assert sample.equals(stage.pick_cam_sample(pred, CLASSES, 12, seed=1))
    assert not sample.equals(stage.pick_cam_sample(pred, CLASSES, 12, seed=2))


def test_dvc_yaml_declares_what_the_stage_writes():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["explain"]
    declared = [
        next(iter(o)) if isinstance(o, dict) else o
        for k in ("outs", "metrics", "plots")
        for o in spec.get(k, [])
    ]
    assert len(declared) == 7
    for path in declared:
        assert f" {path}" in spec["cmd"], path
    flags = {"plots/explain", "metrics/explain.json"}
    assert flags <= set(declared)
    # Pictures are DVC-cached (they show faces); only the numbers live in git.
    for o in spec["plots"] + spec["outs"] + spec.get("metrics", []):
        path, opts = next(iter(o.items())) if isinstance(o, dict) else (o, {})
        assert opts.get("cache", True) == (not str(path).endswith(".csv") and "json" not in path)
    assert set(spec["params"]) == {"seed", "explain"}
