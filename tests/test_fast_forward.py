"""TorchScript inference answers as eager does, and never serves stale weights."""

from __future__ import annotations

import torch
from torch import nn

from facemask.data.cache import Normalize
from facemask.models.factory import build_model
from facemask.models.predict import PooledFeatures, fast_forward, predict_logits


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("mobilenetv2_100", 2).eval()


def _batch(n: int) -> torch.Tensor:
    torch.manual_seed(n)
    return torch.randn(n, 3, 64, 64).contiguous(memory_format=torch.channels_last)


def test_trace_matches_eager_for_logits_and_pooled_features():
    model = _model()
    logits = fast_forward(model, _batch(4))
    pooled = fast_forward(model, _batch(4), pooled=True)
    assert isinstance(logits, torch.jit.ScriptModule)  # the fast path was taken
    with torch.inference_mode():
        for n in (4, 3, 1):  # the last batch of a set is usually smaller
            x = _batch(n)
            assert torch.allclose(logits(x), model(x), atol=1e-4)
            assert torch.allclose(pooled(x), PooledFeatures(model)(x), atol=1e-4)
            assert pooled(x).shape == (n, model.num_features)


def test_trace_is_remade_after_weights_change_in_place():
    model = _model()
    x = _batch(2)
    first = fast_forward(model, x)
    assert fast_forward(model, x) is first  # reused while nothing changed
    with torch.no_grad():  # an optimiser step does this in place
        model.conv_stem.weight.mul_(-1.0)  # folded into constants with its BatchNorm
    second = fast_forward(model, x)
    assert second is not first
    with torch.inference_mode():
        assert torch.allclose(second(x), model(x), atol=1e-4)
        assert not torch.allclose(first(x), model(x), atol=1e-2)  # the old trace is stale


def test_eager_where_tracing_cannot_serve(monkeypatch):
    model = _model()
    monkeypatch.setenv("FACEMASK_EAGER", "1")
    assert fast_forward(model, _batch(2)) is model
    monkeypatch.delenv("FACEMASK_EAGER")
    assert fast_forward(model, _batch(2).double()) is model  # not float32

    class Untraceable(nn.Module):  # no tensor out: tracing refuses it
        def forward(self, x: torch.Tensor) -> None:
            return None

    odd = Untraceable()
    assert fast_forward(odd, _batch(2)) is odd

    class BatchAsConstant(nn.Module):  # traces, but len(x) becomes the traced batch's 2
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[3.0, 0.0]]).repeat(len(x), 1)

    const = BatchAsConstant()
    assert fast_forward(const, _batch(2)) is const


def test_predict_logits_keeps_the_training_mode_and_answers_like_eager():
    model = _model()
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    norm = Normalize([0.5] * 3, [0.25] * 3)
    got = predict_logits(model, images, norm, batch_size=2)
    with torch.no_grad():
        want = model(norm(images))
    assert torch.allclose(got, want, atol=1e-4)
