"""Export: ONNX and TorchScript answer as PyTorch does (parity), the card travels inside the
file, a changed model fails the parity check, int8 keeps the card, the stage writes its
metrics and fails on a parity breach, and `predict --engine onnx` serves the export."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from facemask.evaluation.predictions import predict_probs
from facemask.models.factory import ModelCard, create_model, save_model
from facemask.serving.engines import OnnxEngine, load_engine
from facemask.serving.export import (
    ParityError,
    check_parity,
    export_onnx,
    export_torchscript,
    max_prob_difference,
    quantize_int8,
    time_batches,
    torchscript_probs,
)
from tests.conftest import draw_face

CLASSES = ["with_mask", "without_mask"]


@pytest.fixture
def tiny(tmp_path):
    """A small random-init CNN at 32 px, its card (temperature 1.7) and a few face pictures."""
    torch.manual_seed(0)
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    model.eval()
    card = ModelCard("facemask_cnn", CLASSES, 32, (0.5, 0.45, 0.4), (0.25, 0.2, 0.22))
    card.temperature = 1.7
    rng = np.random.default_rng(0)
    images = np.stack([np.asarray(draw_face(rng, i % 2 == 0, 32)) for i in range(6)])
    return model, card, images


def test_onnx_and_torchscript_match_pytorch(tiny, tmp_path):
    model, card, images = tiny
    reference = predict_probs(model, card, images)
    onnx_engine = OnnxEngine(export_onnx(model, card, tmp_path / "m.onnx"), batch_size=4)
    assert onnx_engine.card == card  # classes, size, normalisation and temperature inside
    onnx_probs = onnx_engine(images)  # 6 pictures in batches of 4 and 2: any batch size
    ts_probs = torchscript_probs(export_torchscript(model, card, tmp_path / "m.ts"), images)
    assert max_prob_difference(reference, onnx_probs) < 1e-4
    assert max_prob_difference(reference, ts_probs) < 1e-4
    check_parity({"onnx": max_prob_difference(reference, onnx_probs)}, 1e-4)  # no raise
    single = onnx_engine(images[:1])
    assert max_prob_difference(reference[:1], single) < 1e-4


def test_parity_check_fails_for_a_changed_model(tiny, tmp_path):
    model, card, images = tiny
    engine = OnnxEngine(export_onnx(model, card, tmp_path / "m.onnx"))
    with torch.no_grad():
        model.fc.bias += torch.tensor([0.05, -0.05])  # the model moves on, the export does not
    diff = max_prob_difference(predict_probs(model, card, images), engine(images))
    assert diff > 1e-4
    with pytest.raises(ParityError, match="onnx"):
        check_parity({"onnx": diff, "torchscript": 0.0}, 1e-4)
    with pytest.raises(ParityError):
        check_parity({"onnx": float("nan")}, 1e-4)


def test_int8_model_keeps_the_card_and_stays_close(tiny, tmp_path):
    model, card, images = tiny
    src = export_onnx(model, card, tmp_path / "m.onnx")
    q = OnnxEngine(quantize_int8(src, tmp_path / "m8.onnx"))
    assert q.card == card
    assert (tmp_path / "m8.onnx").stat().st_size < src.stat().st_size
    assert max_prob_difference(predict_probs(model, card, images), q(images)) < 0.2


def test_time_batches_reports_the_median_of_timed_runs():
    calls = []
    out = time_batches(lambda b: calls.append(len(b)), np.zeros((3, 2, 2, 3)), 5, 4, 2)
    assert calls == [5] * 6  # 2 warm-up + 4 timed, each a batch of 5 (pictures repeated)
    assert out["batch_size"] == 5 and out["repeats"] == 4 and out["median_ms"] >= 0


def test_load_engine_names_the_file_for_missing_and_corrupt_models(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"not a model")
    for path, engine in [(bad, "onnx"), (tmp_path / "none.onnx", "onnx"), (bad, "torch")]:
        with pytest.raises(ValueError, match=str(path.name)) as err:
            load_engine(path, engine)
        assert "\n" not in str(err.value)


def split_csv(tmp_path, images, labels) -> str:
    from PIL import Image

    rows = []
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        path = tmp_path / f"{i}.png"
        Image.fromarray(img).save(path)
        rows.append({"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                     "label": label})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "test.csv", index=False)
    return tmp_path / "test.csv"


EXPORT_PARAMS = {
    "export": {
        "tolerance": 1e-4,
        "batch_size": 4,
        "threads": 1,
        "batch_sizes": [1, 4],
        "repeats": 3,
        "warmup": 1,
    }
}


@pytest.mark.slow
def test_export_stage_writes_metrics_and_fails_on_parity(tiny, tmp_path, monkeypatch):
    from stages import export as stage

    model, card, images = tiny
    save_model(model, card, tmp_path / "m.safetensors")
    test = split_csv(tmp_path, images, [CLASSES[i % 2] for i in range(len(images))])
    out = tmp_path / "export.json"
    args = (tmp_path / "m.onnx", tmp_path / "m.ts", tmp_path / "m8.onnx", out)
    m = stage.main(EXPORT_PARAMS, tmp_path / "m.safetensors", test, *args)
    assert json.loads(out.read_text()) == m
    assert m["parity"]["passed"] and m["parity"]["max_probability_difference"]["onnx"] < 1e-4
    assert m["accuracy"]["onnx"] == m["accuracy"]["pytorch"]
    assert set(m["onnxruntime"]) >= {"batch_1", "batch_4"}
    assert m["int8"]["size_mb"] < m["size_mb"]["onnx"]
    # An exporter that drifts: the stage writes what it measured, then fails.
    real = stage.torchscript_probs
    monkeypatch.setattr(stage, "torchscript_probs", lambda *a: real(*a) + 1e-3)
    with pytest.raises(ParityError, match="torchscript"):
        stage.main(EXPORT_PARAMS, tmp_path / "m.safetensors", test, *args[:2], None, out)
    assert json.loads(out.read_text())["parity"]["passed"] is False


def test_predict_engine_onnx_serves_the_export(tiny, tmp_path, capsys):
    from facemask.cli import main

    model, card, images = tiny
    save_model(model, card, tmp_path / "m.safetensors")
    export_onnx(model, card, tmp_path / "m.onnx")
    paths = []
    for i, img in enumerate(images):
        from PIL import Image

        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(img).save(paths[-1])
    tables = {}
    for engine, model_file in [("torch", "m.safetensors"), ("onnx", "m.onnx")]:
        argv = ["predict", *map(str, paths), "--crops", "--no-progress"]
        assert main([*argv, "--engine", engine, "--model", str(tmp_path / model_file)]) == 0
        tables[engine] = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(tables["onnx"]) == len(images)
    diff = (tables["onnx"]["p_with_mask"] - tables["torch"]["p_with_mask"]).abs().max()
    assert diff < 1e-4


def test_serve_runs_the_onnx_export_on_onnx_runtime(tiny, tmp_path):
    """`facemask serve models/model.onnx`: the export answers as the torch model does."""
    from facemask.serving.http import create_app
    from tests.test_serve import png, post, serving

    model, card, images = tiny
    save_model(model, card, tmp_path / "m.safetensors")
    export_onnx(model, card, tmp_path / "m.onnx")
    probs = {}
    for name in ("m.safetensors", "m.onnx"):
        app = create_app(tmp_path / name, detector=None)
        with serving(app) as url:
            status, answer = post(url, png(images[0]))
        assert status == 200, answer
        (face,) = answer["faces"]
        probs[name] = list(face["probs"].values())
    np.testing.assert_allclose(probs["m.onnx"], probs["m.safetensors"], atol=1e-4)
    version = hashlib.sha256((tmp_path / "m.onnx").read_bytes()).hexdigest()[:12]
    assert answer["model"]["version"] == version  # the export's own
