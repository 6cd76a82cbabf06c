"""Controlled corruptions of model-input images, and accuracy under each at set severities."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

# Default severities, mildest first. Sizes are px of the short side; blur sigmas are px at a
# 224 px input (scaled with the input size); noise sigmas are in 0-255 pixel units.
CORRUPTIONS: dict[str, list] = {
    "downscale": [48, 32, 24, 16],  # a small face in a webcam frame, upscaled by the browser
    "blur": [1, 2, 3, 4],  # Gaussian sigma: out of focus, camera shake
    "jpeg": [50, 30, 20, 10],  # quality: heavy compression of a video call or upload
    "noise": [8, 16, 24, 32],  # Gaussian sigma: sensor noise in dim light
    "brightness": [0.6, 0.4, 0.25, 1.5],  # multiplicative: under-, then over-exposure
    "contrast": [0.6, 0.4, 0.25],  # factor towards the image's mean grey: haze, glare
    "grayscale": [1],  # a monochrome (e.g. infrared) camera
}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's "L"
CHUNK = 64  # images per float32 batch: ~40 MB at 224 px, whatever the set size


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _per_image(images: np.ndarray, fn: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    flat = images[..., 0] if images.shape[-1] == 1 else images  # PIL wants (H, W) for grey
    return np.stack([np.asarray(fn(Image.fromarray(im))) for im in flat]).reshape(images.shape)


def _chunked(images: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    out = np.empty_like(images)
    for s in range(0, len(images), CHUNK):
        out[s : s + CHUNK] = fn(images[s : s + CHUNK].astype(np.float32))
    return out


def _downscale(images: np.ndarray, size: float) -> np.ndarray:
    h, w = images.shape[1:3]
    scale = size / min(h, w)
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    # PIL's BILINEAR widens its footprint when shrinking (antialiased), as browsers do.
    return _per_image(
        images,
        lambda im: im.resize(small, Image.Resampling.BILINEAR).resize(
            (w, h), Image.Resampling.BILINEAR
        ),
    )


def _jpeg(im: Image.Image, quality: float) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(quality))
    return Image.open(io.BytesIO(buf.getvalue())).convert(im.mode)


def _luma(x: np.ndarray) -> np.ndarray:
    """Grey level (N, H, W, 1) of float NHWC images; a single channel is its own grey."""
    return x if x.shape[-1] == 1 else (x[..., :3] @ LUMA)[..., None]


def _noise(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    # One generator for the whole call: the same seed draws the same noise pattern at every
    # sigma, so severities differ only in strength.
    rng = np.random.default_rng(seed)
    return _chunked(
        images, lambda x: _to_uint8(x + sigma * rng.standard_normal(x.shape, dtype=np.float32))
    )


def _contrast(x: np.ndarray, factor: float) -> np.ndarray:
    mean = _luma(x).mean(axis=(1, 2, 3), keepdims=True)  # as PIL's ImageEnhance.Contrast
    return _to_uint8(mean + factor * (x - mean))


def _is_identity(images: np.ndarray, name: str, severity: float | None) -> bool:
    if severity is None or severity == 0:
        return True
    if name in ("brightness", "contrast"):
        return severity == 1
    return name == "downscale" and severity >= min(images.shape[1:3])


def corrupt(images: np.ndarray, name: str, severity: float | None, seed: int = 0) -> np.ndarray:
    """A corrupted copy of uint8 NHWC images, same shape. Severity None or 0 (a factor of 1
    for brightness/contrast, a size at least the short side for downscale) copies them."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    if _is_identity(images, name, severity) or not len(images):
        return images.copy()
    assert severity is not None  # None is the identity, copied above
    if name == "downscale":
        return _downscale(images, severity)
    if name == "blur":
        sigma = severity * min(images.shape[1:3]) / 224
        return _per_image(images, lambda im: im.filter(ImageFilter.GaussianBlur(sigma)))
    if name == "jpeg":
        return _per_image(images, lambda im: _jpeg(im, severity))
    if name == "noise":
        return _noise(images, severity, seed)
    if name == "brightness":
        return _to_uint8(np.arange(256, dtype=np.float32) * severity)[images]  # a lookup table
    if name == "contrast":
        return _chunked(images, lambda x: _contrast(x, severity))
    return _chunked(images, lambda x: _to_uint8(np.broadcast_to(_luma(x), x.shape)))


def robustness_table(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    corruptions: dict[str, list] = CORRUPTIONS,
    seed: int = 0,
) -> pd.DataFrame:
    """corruption, severity, accuracy, n: the clean images first (corruption "none",
    severity 0), then each corruption at each severity. `predict` maps uint8 NHWC images to
    predicted class indices."""
    labels = np.asarray(labels)

    def accuracy(x: np.ndarray) -> float:
        return round(float(np.mean(np.asarray(predict(x)) == labels)), 6) if len(x) else np.nan

    rows = [("none", 0, accuracy(images))]
    for name, severities in corruptions.items():
        rows += [(name, s, accuracy(corrupt(images, name, s, seed))) for s in severities]
    names, sev, acc = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "corruption": names,
            "severity": pd.Series(sev, dtype=object),  # 16 stays 16 and 0.6 stays 0.6
            "accuracy": acc,
            "n": len(images),
        }
    )


def _plain(x):
    """A JSON-ready Python number from a numpy or Python one."""
    return x.item() if isinstance(x, np.generic) else x


def robustness_summary(table: pd.DataFrame) -> dict:
    """Clean accuracy, the mean over corrupted rows, the worst row and the mean per
    corruption (in table order)."""
    clean = table[table["corruption"] == "none"]
    bad = table[table["corruption"] != "none"]
    worst = bad.loc[bad["accuracy"].idxmin()] if len(bad) else None
    per = bad.groupby("corruption", sort=False)["accuracy"].mean()
    return {
        "clean_accuracy": float(clean["accuracy"].iloc[0]) if len(clean) else None,
        "mean_corrupted_accuracy": round(float(bad["accuracy"].mean()), 6) if len(bad) else None,
        "worst": None
        if worst is None
        else {
            "corruption": worst["corruption"],
            "severity": _plain(worst["severity"]),
            "accuracy": float(worst["accuracy"]),
        },
        "per_corruption": {k: round(float(v), 6) for k, v in per.items()},
    }


def stratified_sample(df: pd.DataFrame, n: int, seed: int, by: str = "label") -> np.ndarray:
    """Sorted row positions of a sample of min(n, len(df)) rows whose `by` proportions match
    the frame's (largest-remainder rounding), the same for the same seed."""
    m = min(n, len(df))
    values = df[by].to_numpy()
    groups = sorted(pd.unique(values), key=str)
    sizes = np.array([(values == g).sum() for g in groups])
    quota = sizes * m / max(len(df), 1)
    take = np.floor(quota).astype(int)
    # Hand the rows rounding left over to the largest remainders (ties: group order).
    extra = np.argsort(-(quota - take), kind="stable")[: m - take.sum()]
    take[extra] += 1
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(values == g), k, replace=False)
        for g, k in zip(groups, take, strict=True)
    ]
    return np.sort(np.concatenate([*picks, np.array([], dtype=np.int64)])).astype(np.int64)
