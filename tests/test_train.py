"""Training loops: the head learns, fine-tuning resumes exactly where it stopped."""

from __future__ import annotations

import pytest
import torch

from facemask.data.cache import Normalize
from facemask.models.factory import create_model
from facemask.training.train import class_weights, fine_tune, fit_head


def separable(n: int, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, dim, generator=g) + 2.0 * y[:, None] * torch.ones(dim) / dim**0.5
    return x, y


def test_fit_head_learns_and_keeps_best_epoch():
    x, y = separable(400)
    head = torch.nn.Linear(16, 2)
    history = fit_head(head, x[:300], y[:300], x[300:], y[300:], epochs=30, lr=0.05, patience=0)
    assert len(history) == 30
    best = min(history, key=lambda r: r["valid_loss"])
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(head(x[300:]), y[300:]).item()
    assert loss == pytest.approx(best["valid_loss"], abs=1e-5)  # best weights restored
    assert best["valid_acc"] > 0.8


def test_valid_loss_is_weighted_as_the_training_loss():
    # A rare class: unweighted, the valid loss is all the common one's, and early stopping
    # keeps weights that never learnt the rare class.
    x, _ = separable(400)
    y = torch.where(torch.arange(400) % 10 == 0, 1, 0)
    x = x + 2.0 * y[:, None]
    w = class_weights(y[:300], 2, "balanced")
    head = torch.nn.Linear(16, 2)
    history = fit_head(
        head, x[:300], y[:300], x[300:], y[300:], epochs=5, lr=0.05, patience=0, class_weight=w
    )
    best = min(history, key=lambda r: r["valid_loss"])
    with torch.no_grad():
        logits = head(x[300:])
    weighted = torch.nn.functional.cross_entropy(logits, y[300:], weight=w).item()
    plain = torch.nn.functional.cross_entropy(logits, y[300:]).item()
    assert abs(weighted - plain) > 1e-3  # the test can tell the two apart
    assert best["valid_loss"] == pytest.approx(weighted, abs=1e-5)


def test_fit_head_stops_early():
    x, y = separable(200)
    history = fit_head(
        torch.nn.Linear(16, 2), x[:100], y[:100], x[100:], y[100:], epochs=200, lr=0.5, patience=3
    )
    losses = [r["valid_loss"] for r in history]
    best = losses.index(min(losses))
    # Stopped exactly `patience` epochs after the best one, long before the 200 allowed.
    assert len(history) == best + 1 + 3 < 200


class Interrupt(Exception):
    pass


def tiny_finetune(checkpoint, augment=None, epochs: int = 3, on_epoch=None):
    torch.manual_seed(0)
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.arange(24) % 2
    history = fine_tune(
        model,
        Normalize((0.5,) * 3, (0.25,) * 3),
        images[:16],
        labels[:16],
        images[16:],
        labels[16:],
        augment,
        epochs=epochs,
        batch_size=4,
        patience=0,
        checkpoint=checkpoint,
        on_epoch=on_epoch,
    )
    return model, history


def test_fine_tune_resumes_after_interrupt(tmp_path):
    reference, ref_history = tiny_finetune(None)

    calls = {"n": 0}

    def flaky(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 16 + 5:  # part-way through epoch 2
            raise Interrupt
        return x

    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupt):
        tiny_finetune(ckpt, flaky)
    assert ckpt.is_file()  # epoch 1 was saved
    seen = {"n": 0}

    def count(x: torch.Tensor) -> torch.Tensor:
        seen["n"] += 1
        return x

    logged: list[dict] = []
    resumed, history = tiny_finetune(ckpt, count, on_epoch=logged.append)
    assert seen["n"] == 2 * 16  # only epochs 2 and 3 ran: it resumed, not restarted
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert logged == history  # the log (DVCLive) gets the saved epoch once, then the new ones
    assert [r["train_loss"] for r in history] == pytest.approx(
        [r["train_loss"] for r in ref_history]
    )
    for a, b in zip(resumed.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_bf16_features_are_close_and_cached_apart(tmp_path):
    from facemask.data.cache import ArrayStore
    from facemask.training.features import cached_features, compute_features

    torch.manual_seed(0)
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    norm = Normalize((0.5,) * 3, (0.25,) * 3)
    fp32 = compute_features(model, images, norm)
    bf16 = compute_features(model, images, norm, bf16=True)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert (bf16 - fp32).norm() / fp32.norm() < 0.05
    store = ArrayStore(tmp_path)
    keys = [f"k{i}" for i in range(6)]
    cached_features(model, images, keys, norm, store)
    cached_features(model, images, keys, norm, store, bf16=True)
    assert len(list(tmp_path.rglob("*.npy"))) == 12  # one entry per (image, precision)


def test_joined_model_reuses_each_backbones_cached_features(tmp_path, monkeypatch):
    from facemask.data.cache import Split
    from facemask.training import features as data
    from facemask.training.features import feature_sources, frozen_features

    torch.manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    split = Split(images, torch.zeros(5, dtype=torch.long), [f"k{i}" for i in range(5)])
    single, _ = create_model("facemask_cnn", 2, pretrained=False)
    joined, _ = create_model("facemask_cnn+resnet18", 2, pretrained=False)
    joined.backbones[0].load_state_dict(single.state_dict(), strict=False)  # same weights
    alone = frozen_features(feature_sources(tmp_path, single, 32), split, 4)
    calls = []
    compute = data.compute_features

    def counted(model, x, *args, **kwargs):
        calls.append((type(model).__name__, len(x)))
        return compute(model, x, *args, **kwargs)

    monkeypatch.setattr(data, "compute_features", counted)
    sources = feature_sources(tmp_path, joined, 32)
    both = frozen_features(sources, split, 4)
    # Only resnet18 ran; facemask_cnn's features came from its own cache.
    assert calls == [("ResNet", 5)]
    torch.testing.assert_close(both[:, :256], alone)
    jcfg = joined.pretrained_cfg
    with torch.no_grad():  # and equal what the joined model computes itself
        direct = joined.eval().forward_head(
            joined.forward_features(Normalize(jcfg["mean"], jcfg["std"])(images)), pre_logits=True
        )
    torch.testing.assert_close(both, direct, atol=1e-4, rtol=1e-4)
    frozen_features(sources, split, 4)
    assert calls == [("ResNet", 5)]  # second time: all cached


def test_feature_dropout_keeps_one_minus_p_in_every_lane_and_rescales():
    from facemask.training.train import feature_dropout

    torch.manual_seed(0)
    x = torch.ones(200, 2559)  # not a multiple of 4: the last draw is cut
    out = feature_dropout(x, 0.2)
    kept = out != 0
    assert out[kept].unique().tolist() == [pytest.approx(1.25)]
    # Each 64-bit draw feeds four consecutive elements: each lane must be fair on its own
    # (a draw whose top bits were never set would keep one lane ~100 %).
    lanes = kept.flatten()[: kept.numel() // 4 * 4].view(-1, 4).float().mean(0)
    assert torch.allclose(lanes, torch.full((4,), 0.8), atol=0.01), lanes
    torch.manual_seed(0)
    assert torch.equal(feature_dropout(x, 0.2), out)  # seeded like the rest of training
    assert not torch.equal(feature_dropout(x, 0.2), out)  # and a fresh mask each call
    assert feature_dropout(x, 0.0) is x
    assert (feature_dropout(x, 0.5) != 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="dropout"):
        feature_dropout(x, 1.0)


def test_fine_tune_validates_in_micro_batches(monkeypatch):
    # The epoch-end validation once ran 64 pictures at a time and raised the train stage's
    # peak RSS by ~0.37 GB over the fine-tune's own micro-batches.
    import facemask.training.train as train

    sizes = []
    real = train.predict_logits
    monkeypatch.setattr(
        train,
        "predict_logits",
        lambda m, x, n, bs=64, **k: sizes.append(bs) or real(m, x, n, bs, **k),
    )
    torch.manual_seed(0)
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(40) % 2
    norm = Normalize((0.5,) * 3, (0.25,) * 3)
    fine_tune(model, norm, images[:24], labels[:24], images[24:], labels[24:], None, 2,
              batch_size=8, micro_batch_size=2, patience=0)  # fmt: skip
    assert sizes == [2, 2]  # once per epoch, at the micro-batch size


def test_fine_tune_valid_loss_is_weighted_as_the_training_loss():
    torch.manual_seed(0)
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    labels = (torch.arange(40) % 5 == 0).long()
    w = torch.tensor([0.2, 3.0])
    norm = Normalize((0.5,) * 3, (0.25,) * 3)
    history = fine_tune(model, norm, images[:24], labels[:24], images[24:], labels[24:], None,
                        1, batch_size=8, patience=0, class_weight=w)  # fmt: skip
    model.eval()
    with torch.no_grad():
        logits = model(norm(images[24:]))
    weighted = torch.nn.functional.cross_entropy(logits, labels[24:], weight=w).item()
    plain = torch.nn.functional.cross_entropy(logits, labels[24:]).item()
    assert abs(weighted - plain) > 1e-3
    assert history[-1]["valid_loss"] == pytest.approx(weighted, abs=1e-4)


def test_balanced_class_weights():
    y = torch.tensor([0] * 8 + [1] * 2)
    w = class_weights(y, 3, "balanced")
    assert w.tolist() == pytest.approx([10 / 24, 10 / 6, 10 / 3])  # absent class: count 1
    assert class_weights(y, 2, "none") is None
    with pytest.raises(ValueError, match="balanced"):
        class_weights(y, 2, "inverse")


def test_fine_tune_keeps_the_frozen_early_layers_and_trains_the_rest():
    from facemask.training.train import early_layers

    torch.manual_seed(0)
    model, _ = create_model("mobilenetv2_100", 2, pretrained=False)
    assert early_layers(model, 0.0) == []
    frozen = early_layers(model, 0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    assert names[id(frozen[0])].startswith("conv_stem")  # the stem first, then blocks
    assert not any(names[id(p)].startswith(("conv_head", "classifier")) for p in frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(16) % 2
    norm = Normalize((0.5,) * 3, (0.25,) * 3)
    fine_tune(model, norm, images, labels, images[:4], labels[:4], None, 1, lr=0.01,
              batch_size=8, patience=0, freeze=0.5, freeze_bn=False)  # fmt: skip
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    frozen_names = {names[id(p)] for p in frozen}
    assert not moved & frozen_names  # nothing frozen changed
    assert "classifier.weight" in moved and "conv_head.weight" in moved  # the rest learned
    # joined backbones freeze the same share of each branch
    joined, _ = create_model("mobilenetv2_100+tf_efficientnet_lite0", 2, pretrained=False)
    per_branch = {n.split(".")[1] for n, p in joined.named_parameters()
                  if any(p is q for q in early_layers(joined, 0.5))}  # fmt: skip
    assert per_branch == {"0", "1"}
