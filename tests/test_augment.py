"""Degraded training views: random per picture, yet a pure function of (seed, view, key)."""

from __future__ import annotations

import numpy as np
import torch

from facemask.data.cache import ArrayStore, Normalize
from facemask.models.factory import create_model
from facemask.training import features
from facemask.training.augment import DEGRADE_DEFAULTS, degrade, degraded_view

OFF = {k: 0.0 for k in DEGRADE_DEFAULTS if k.startswith("p_")} | {"hflip": 0.0}


def sharpness(img: np.ndarray) -> float:
    g = img.astype(np.float32).mean(-1)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def noisy(seed: int = 0, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_everything_off_leaves_the_image_alone():
    img = noisy()
    assert np.array_equal(degrade(img, np.random.default_rng(0), OFF), img)


def test_downscale_removes_detail_and_darkening_darkens():
    img = noisy()
    small = degrade(img, np.random.default_rng(0), OFF | {"p_downscale": 1, "downscale": [12, 12]})
    assert small.shape == img.shape and small.dtype == np.uint8
    assert sharpness(small) < sharpness(img) / 10
    dark = degrade(img, np.random.default_rng(0), OFF | {"p_gamma": 1, "gamma": [2.5, 2.5]})
    assert dark.mean() < img.mean() * 0.6


def test_views_are_pure_functions_of_seed_view_and_key():
    imgs = torch.from_numpy(np.stack([noisy(i) for i in range(4)])).permute(0, 3, 1, 2)
    keys = ["aa", "bb", "cc", "dd"]
    first = degraded_view(0, seed=1)(imgs, keys)
    assert torch.equal(first, degraded_view(0, seed=1)(imgs, keys))
    # Batch order does not matter: each picture's copy depends on its own key.
    assert torch.equal(first[2:], degraded_view(0, seed=1)(imgs[2:], keys[2:]))
    assert not torch.equal(first, degraded_view(1, seed=1)(imgs, keys))
    assert not torch.equal(first, imgs)


def test_degraded_features_are_cached_under_their_own_view(tmp_path, monkeypatch):
    model, _ = create_model("facemask_cnn", 2, pretrained=False)
    imgs = torch.from_numpy(np.stack([noisy(i, 32) for i in range(3)])).permute(0, 3, 1, 2)
    keys = ["k0", "k1", "k2"]
    store, norm = ArrayStore(tmp_path), Normalize((0.5,) * 3, (0.5,) * 3)
    calls = []
    real = features.compute_features
    monkeypatch.setattr(
        features, "compute_features", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    view = ("degraded-x", degraded_view(0, seed=0))
    deg = features.cached_features(model, imgs, keys, norm, store, 2, view=view)
    again = features.cached_features(model, imgs, keys, norm, store, 2, view=view)
    orig = features.cached_features(model, imgs, keys, norm, store, 2)
    assert len(calls) == 2  # the degraded view once, the original once; the repeat is cached
    torch.testing.assert_close(deg, again)
    assert not torch.allclose(deg, orig)


def test_joined_backbones_share_one_transform_per_picture(tmp_path, monkeypatch):
    from facemask.data.cache import Split

    torch.manual_seed(0)
    joined, _ = create_model("facemask_cnn+resnet18", 2, pretrained=False)
    imgs = torch.from_numpy(np.stack([noisy(i, 32) for i in range(5)])).permute(0, 3, 1, 2)
    split = Split(imgs, torch.zeros(5, dtype=torch.long), [f"k{i}" for i in range(5)])
    monkeypatch.setattr(features, "VIEW_CHUNK", 2)  # several chunks, the last one short
    seen: list[str] = []
    degrade_fn = degraded_view(0, seed=0)

    def counted(images, keys):
        seen.extend(keys)
        return degrade_fn(images, keys)

    sources = features.feature_sources(tmp_path / "a", joined, 32)
    shared = features.frozen_features(sources, split, 2, view=("degraded-x", counted))
    assert sorted(seen) == split.keys  # each picture transformed once, not once per backbone
    # The same numbers as each backbone transforming on its own (fresh caches).
    alone = torch.cat(
        [
            features.cached_features(
                s.module, imgs, split.keys, s.norm, s.store, 2, view=("degraded-x", degrade_fn)
            )
            for s in features.feature_sources(tmp_path / "b", joined, 32)
        ],
        1,
    )
    torch.testing.assert_close(shared, alone)
    seen.clear()
    again = features.frozen_features(sources, split, 2, view=("degraded-x", counted))
    assert seen == [] and torch.equal(again, shared)  # all cached: no transform at all


def test_fine_tune_augment_degrades_at_its_probability():
    from facemask.training.augment import create_augment

    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 48, 48), np.uint8))
    plain = dict(rotation=0, hflip=False, color_jitter=0, scale=(1.0, 1.0))
    off = create_augment(48, **plain)
    assert torch.equal(off(img), img)
    # Downscale only, always: every call loses detail, and the draws differ between calls.
    cfg = OFF | {"p_downscale": 1.0, "downscale": [12, 13]}
    always = create_augment(48, **plain, degrade=1.0, degrade_cfg=cfg)
    torch.manual_seed(1)
    outs = [always(img) for _ in range(4)]
    for out in outs:
        assert out.shape == img.shape and out.dtype == torch.uint8
        assert sharpness(out.permute(1, 2, 0).numpy()) < sharpness(img.permute(1, 2, 0).numpy()) / 4
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    half = create_augment(48, **plain, degrade=0.5, degrade_cfg=cfg)
    torch.manual_seed(2)
    changed = sum(not torch.equal(half(img), img) for _ in range(200))
    assert 70 < changed < 130


def test_degraded_view_names_follow_the_code(monkeypatch):
    from facemask.training import augment

    name = augment.named_degraded_view(0, 1)[0]
    monkeypatch.setattr(augment, "code_fingerprint", lambda *m: "edited")
    assert augment.named_degraded_view(0, 1)[0] != name
