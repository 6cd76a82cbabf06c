"""Task presets merge into params.yaml and keep it a valid, commented params file."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from facemask.presets import apply_preset, list_presets, merge
from facemask.training.train import class_weights
from tests.conftest import ROOT


def test_presets_exist():
    assert {"binary", "three_class", "mask_type"} <= set(list_presets())


@pytest.mark.parametrize("name", ["binary", "three_class", "mask_type"])
def test_apply_preset_keeps_comments_and_maps_onto_classes(tmp_path, name):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_preset(name, params)
    text = params.read_text()
    assert "# one seed for split" in text  # comments survive
    data = yaml.safe_load(text)
    preset = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())
    assert data["classes"] == preset["classes"]
    assert data["data"]["sources"] == preset["data"]["sources"]
    for src in data["data"]["sources"]:  # every source maps onto the preset's classes only
        assert set(src["classes"].values()) <= set(data["classes"])
    assert data["train"]["head"]["epochs"] == 60  # keys the preset leaves alone stay
    default = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["image_size"]
    assert data["train"]["image_size"] == preset.get("train", {}).get("image_size", default)


def test_binary_preset_is_the_default():
    default = yaml.safe_load((ROOT / "params.yaml").read_text())
    preset = yaml.safe_load((ROOT / "presets" / "binary.yaml").read_text())
    assert default["classes"] == preset["classes"]
    assert default["data"]["sources"] == preset["data"]["sources"]
    assert default["model"] == preset["model"]  # switching back restores the default model
    # ... and the default training recipe (size, fine-tuning) that another preset changes
    assert default["train"]["image_size"] == preset["train"]["image_size"]
    ft, want = default["train"]["finetune"], preset["train"]["finetune"]
    assert {k: ft[k] for k in want if k != "augment"} == {
        k: v for k, v in want.items() if k != "augment"
    }
    assert want["augment"].items() <= ft["augment"].items()


def test_binary_after_fast_restores_the_default_params(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    default = yaml.safe_load(params.read_text())
    apply_preset("fast", params)
    fast = yaml.safe_load(params.read_text())
    assert fast["audit"]["folds"] == 0 and fast["model"] == "mobilenetv2_100"
    apply_preset("binary", params)
    assert yaml.safe_load(params.read_text()) == default  # every key fast changed, back


def test_unknown_preset_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="three_class"):
        apply_preset("four_class", tmp_path / "p.yaml")


def test_merge_replaces_lists_and_merges_mappings():
    base = {"a": {"x": 1, "y": 2}, "l": [1, 2]}
    assert merge(base, {"a": {"y": 3}, "l": [9]}) == {"a": {"x": 1, "y": 3}, "l": [9]}


def test_balanced_class_weights():
    y = torch.tensor([0] * 8 + [1] * 2)
    w = class_weights(y, 3, "balanced")
    assert w.tolist() == pytest.approx([10 / 24, 10 / 6, 10 / 3])  # absent class: count 1
    assert class_weights(y, 2, "none") is None
    with pytest.raises(ValueError, match="balanced"):
        class_weights(y, 2, "inverse")
