"""Members joined into one model: the mean of their calibrated logits, as a joined net."""

from __future__ import annotations

import pytest
import torch
import yaml

from facemask.models.ensemble import join_members, load_members
from facemask.models.factory import ModelCard, build_model, load_model, save_model
from facemask.params import stage_params, task_params
from stages import train
from stages.train_member import member_params
from tests.conftest import ROOT

CLASSES = ["with_mask", "without_mask", "mask_worn_incorrectly"]


def member(seed: int, temperature: float, model: str = "facemask_cnn") -> tuple:
    torch.manual_seed(seed)
    net = build_model(model, len(CLASSES)).eval()
    with torch.no_grad():  # a head far from zero, so a wrong scale or sign shows
        net.get_classifier().bias.copy_(torch.tensor([0.5, -1.0, 2.0]) * seed)
    cfg = net.pretrained_cfg
    card = ModelCard(model, CLASSES, 32, cfg["mean"], cfg["std"], f"w{seed}", temperature, 0.3, 0.2)
    return net, card


def test_joined_members_answer_with_the_mean_of_their_calibrated_logits(tmp_path):
    (a, ca), (b, cb), (c, cc) = member(1, 0.5), member(2, 2.0), member(3, 1.0)
    joined, card = join_members([a, b, c], [ca, cb, cc])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = (a(x) / 0.5 + b(x) / 2.0 + c(x) / 1.0) / 3
        assert torch.allclose(joined(x), want, atol=1e-5)
        assert not torch.allclose(joined(x), (a(x) + b(x) + c(x)) / 3, atol=1e-3)
    assert card.model == "facemask_cnn+facemask_cnn+facemask_cnn" and card.temperature == 1.0
    assert (card.classes, card.abstain, card.crop_margin) == (CLASSES, 0.3, 0.2)
    # It saves and loads as the joined net it is: no stage needs to know it is an ensemble.
    save_model(joined, card, tmp_path / "e.safetensors")
    loaded, back = load_model(tmp_path / "e.safetensors")
    with torch.no_grad():
        assert torch.allclose(loaded(x), want, atol=1e-5)
    assert back == card


def test_members_load_from_files_and_one_that_disagrees_is_named(tmp_path):
    (a, ca), (b, cb) = member(1, 1.0), member(2, 1.0)
    save_model(a, ca, tmp_path / "a.safetensors")
    save_model(b, cb, tmp_path / "b.safetensors")
    joined, _ = load_members([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(joined(x), (a(x) + b(x)) / 2, atol=1e-5)
    cb.image_size = 48
    save_model(b, cb, tmp_path / "b.safetensors")
    with pytest.raises(ValueError, match=r"b\.safetensors: .* at 48 px.*members must agree"):
        load_members([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    with pytest.raises(ValueError, match="2 or more"):
        join_members([a], [ca])


def test_a_member_trains_at_its_seed_without_the_offset():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = stage_params(task_params(raw, "three_class"), train.SECTIONS)
    assert params.train.tune_offset == "mask_worn_incorrectly"  # the task fits one
    got = member_params(params, 7)
    assert got.seed == 7 and got.train.tune_offset is None
    assert got.train.model_dump(exclude={"tune_offset"}) == params.train.model_dump(
        exclude={"tune_offset"}
    )
    assert got.model == params.model and got.classes == params.classes
    other = member_params(params, 7, "tf_efficientnet_lite0")
    assert other.model == "tf_efficientnet_lite0" and other.seed == 7
    assert other.model != params.model and other.train == got.train


def test_the_ensemble_stage_joins_exactly_the_members_train_makes():
    stages = yaml.safe_load((ROOT / "three_class" / "dvc.yaml").read_text())["stages"]
    members = stages["train"]["foreach"]
    files = [f"models/three_class/members/{key}.safetensors" for key in members]
    cmd = stages["ensemble"]["cmd"].split()
    assert cmd[cmd.index("stages.ensemble") + 1 : cmd.index("--splits")] == files
    deps = [d for d in stages["ensemble"]["deps"] if d.startswith("models/three_class/members")]
    assert deps == files
    assert stages["train"]["do"]["outs"][0] == "models/three_class/members/${key}.safetensors"
    train = stages["train"]["do"]["cmd"].split()  # each member trains its own backbone and seed
    assert {"${item.model}", "${item.seed}"} <= set(train)
    assert train[train.index("--model") + 1] == "${item.model}"
    assert train[train.index("--seed") + 1] == "${item.seed}"
    # Each member names its backbone and seed; those that follow params' model say so.
    assert all(set(item) == {"model", "seed"} for item in members.values())
    backbones = {item["model"] for item in members.values()}
    assert "${tasks.three_class.model}" in backbones and len(backbones) > 1
    seeds = [(item["model"], item["seed"]) for item in members.values()]
    assert len(set(seeds)) == len(seeds)  # no member trained twice
