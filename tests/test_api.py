"""facemask.load(model).predict(pictures): the documented Python API."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from PIL import Image

import facemask
from facemask import api
from facemask.data.images import ImageError
from facemask.detection import factory
from facemask.models.factory import ModelCard, create_model, save_model
from facemask.serving.stream import answer_frames


def test_the_module_doctest_runs():
    result = doctest.testmod(api)
    assert result.attempted >= 5 and result.failed == 0


class TwoFaces:
    """A detector that finds the same two boxes in every frame."""

    def detect(self, rgb):
        return [((2.0, 2.0, 20.0, 20.0), 0.9), ((30.0, 10.0, 60.0, 44.0), 0.7)]


def test_predict_answers_each_picture_in_order_like_the_serving_chain(tmp_path, monkeypatch):
    torch_model, _ = create_model("facemask_cnn", 2, pretrained=False)
    card = ModelCard("facemask_cnn", ["with_mask", "without_mask"], 32, (0.5,) * 3, (0.25,) * 3)
    save_model(torch_model, card, tmp_path / "m.safetensors")
    asked = {}
    stub = lambda path, *a, **k: asked.update(path=path) or TwoFaces()  # noqa: E731
    monkeypatch.setattr(factory, "create_finder", stub)
    model = facemask.load(tmp_path / "m.safetensors")
    assert asked["path"] == tmp_path / "finder.json"  # the finder file beside the model
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    Image.fromarray(frames[1]).save(tmp_path / "f.png")
    answers = model.predict([frames[0], tmp_path / "f.png", Image.fromarray(frames[2])])
    assert [len(a) for a in answers] == [2, 2, 2]
    assert answers[0][1].box == (30.0, 10.0, 60.0, 44.0) and answers[0][1].score == 0.7
    # the same probabilities the CLI's chain gives for the same frames
    from facemask.serving.inputs import Frame

    chain = answer_frames(
        [Frame("x", "x", f) for f in frames], model.engine, TwoFaces(), 0.2, 64, 0.0
    )
    for got, want in zip(answers, chain, strict=True):
        for a, b in zip(got, want.faces, strict=True):
            np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    assert model.classes == ["with_mask", "without_mask"]


def test_bad_pictures_are_clear_errors(tmp_path):
    torch_model, _ = create_model("facemask_cnn", 2, pretrained=False)
    card = ModelCard("facemask_cnn", ["a", "b"], 32, (0.5,) * 3, (0.25,) * 3)
    save_model(torch_model, card, tmp_path / "m.safetensors")
    model = facemask.load(tmp_path / "m.safetensors", detector=None)
    assert model.margin == 0.2  # a card without a crop margin: the params default
    card.crop_margin = 0.35
    save_model(torch_model, card, tmp_path / "m2.safetensors")
    assert facemask.load(tmp_path / "m2.safetensors", detector=None).margin == 0.35
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        model.predict([np.zeros((8, 8), np.uint8)])
    (tmp_path / "bad.jpg").write_bytes(b"not a picture")
    with pytest.raises(ImageError, match=r"bad\.jpg"):
        model.predict([tmp_path / "bad.jpg"])
    with pytest.raises(ValueError, match="no such model file"):
        facemask.load(tmp_path / "missing.safetensors")
