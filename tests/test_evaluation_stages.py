"""The evaluation stages on tiny synthetic data: held-in test on published labels, an external
set with a planted copy of a training picture, slices, calibration and robustness."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from facemask.models.factory import load_model
from stages import evaluate, external, external_data, robustness, slices, train
from tests.conftest import ROOT, make_dataset, run_data_stages, zip_folder

MODEL = Path("models/model.safetensors")


@pytest.fixture
def trained(tmp_path, monkeypatch, params) -> dict:
    """Data stages and train in a work folder; an external zip holding one training picture."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    run_data_stages(params)
    train.main(params, Path("data/splits"), MODEL, Path("metrics/train"))
    ext = make_dataset(tmp_path / "ext", per_class=10, seed=7)  # other faces than training's
    seen = pd.read_csv("data/splits/train.csv")["path"].iloc[0]
    shutil.copy(seen, ext / "with_mask" / "copy_of_a_training_picture.jpg")
    (ext / "mask_weared_incorrect").mkdir()
    for i in range(2):
        shutil.copy(
            ext / "with_mask" / "with_mask_001.jpg", ext / "mask_weared_incorrect" / f"{i}.jpg"
        )
    spec = {
        "name": "other",
        "url": str(zip_folder(tmp_path / "ext", tmp_path / "other.zip")),
        "file": None,
        "sha256": None,
        "subdir": "tiny-main/dataset",
        "classes": {"with_mask": "with_mask", "without_mask": "without_mask"},
    }
    params["evaluate"]["external"] = [spec]
    return params


@pytest.mark.slow
def test_evaluation_stages_end_to_end(trained):
    params = trained
    _, card = load_model(MODEL)
    assert card.temperature > 0
    assert card.abstain == params["evaluate"]["abstain"]  # predict's default threshold
    assert card.crop_margin == params["prepare"]["crop_margin"]  # predict crops faces alike
    assert (
        json.loads(Path("metrics/train/metrics.json").read_text())["temperature"]
        == card.temperature
    )

    m = evaluate.main(
        params,
        MODEL,
        Path("data/splits/test.csv"),
        Path("data/splits/test_published.csv"),
        Path("metrics/test.json"),
        Path("metrics/predictions.csv"),
        Path("metrics/curves"),
    )
    pred = pd.read_csv("metrics/predictions.csv")
    assert m["n"] == len(pd.read_csv("data/splits/test_published.csv"))
    assert m["errors"] == int((pred["label"] != pred["predicted"]).sum())  # no review: same
    assert m["reviewed_labels"]["n"] == len(pred) and m["reviewed_labels"]["dropped"] == 0
    cal = m["calibration"]
    assert cal["temperature"] == card.temperature and cal["ece_after"] >= 0
    # The answered part is what clears the abstain threshold at the calibrated confidence.
    answered = pred["confidence"] >= params["evaluate"]["abstain"]
    assert m["abstain"]["coverage"] == pytest.approx(answered.mean(), abs=1e-6)
    for name in (
        "reliability.csv",
        "risk_coverage.csv",
        "roc/with_mask.csv",
        "pr/without_mask.csv",
    ):
        assert len(pd.read_csv(Path("metrics/curves") / name)) > 1, name

    report = external_data.main(params, Path("data/external"), Path("metrics/external_data.json"))
    assert report["other"]["left_out"] == {"mask_weared_incorrect": 2}
    assert report["other"]["images_indexed"] == 21  # 20 new faces + the copied training one
    ext = external.main(
        params,
        MODEL,
        Path("data/external"),
        Path("data/splits"),
        Path("metrics/external"),
        Path("metrics/external_predictions"),
    )
    assert ext["other"]["overlap_removed"] == 1
    assert ext["other"]["n"] == 20
    rows = pd.read_csv("metrics/external_predictions/other.csv")
    assert "copy_of_a_training_picture" not in " ".join(rows["path"])
    assert json.loads(Path("metrics/external/other.json").read_text())["n"] == 20

    summary = slices.main(
        params,
        Path("metrics/predictions.csv"),
        Path("metrics/external_predictions"),
        Path("metrics/slices.csv"),
        Path("metrics/slices.json"),
        Path("plots/slices.png"),
    )
    table = pd.read_csv("metrics/slices.csv")
    by_source = table[table["family"] == "source"].set_index("slice")["n"]
    assert by_source.to_dict() == {"other": 20, "tiny": len(pred)}
    assert set(summary) >= {"source", "face_size", "brightness", "blur", "colour"}

    r = robustness.main(
        params,
        MODEL,
        Path("data/splits/test_published.csv"),
        Path("metrics/robustness.csv"),
        Path("metrics/robustness.json"),
        Path("plots/robustness.png"),
    )
    table = pd.read_csv("metrics/robustness.csv")
    assert r["sample"] == min(12, m["n"])  # the tiny test split is smaller than the sample
    assert r["clean_accuracy"] == pytest.approx(m["accuracy"])  # the whole split, uncorrupted
    assert set(table["corruption"]) == {"none", "downscale", "grayscale"}


def test_bad_external_spec_fails_naming_the_set(tmp_path, params):
    """A class map onto an unknown class: one line naming the set, exit 2, no traceback."""
    params["evaluate"]["external"] = [
        {"name": "crowd", "url": "x.zip", "classes": {"mask": "masked"}}
    ]
    (tmp_path / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    proc = subprocess.run(
        [sys.executable, "-m", "stages.external_data", "--params", str(tmp_path / "params.yaml"),
         "--out", str(tmp_path / "ext"), "--report", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "evaluate.external[crowd]" in proc.stderr and "masked" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_external_archive_fails_naming_the_set(tmp_path, params):
    params["evaluate"]["external"] = [
        {"name": "gone", "url": str(tmp_path / "nowhere.zip"), "classes": {"a": "with_mask"}}
    ]
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    proc = subprocess.run(
        [sys.executable, "-m", "stages.external_data", "--params", str(tmp_path / "params.yaml"),
         "--out", str(tmp_path / "ext"), "--report", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "evaluate.external[gone]" in proc.stderr and "Traceback" not in proc.stderr
