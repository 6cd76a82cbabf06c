"""Calibration: how far confidences are from accuracies, temperature scaling, and the
accuracy of the part a model answers when it may abstain below a confidence threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

MAX_ROWS = 101  # risk-coverage rows kept: enough for a smooth plot, a small CSV


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature (float64)."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1))


def _top(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and whether the top label is right, per row."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs.max(1), probs.argmax(1) == np.asarray(labels)


def _bin_index(conf: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins (lower, upper] over [0, 1]; a confidence of 0 goes to the first."""
    return np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: sum over bins of |B|/N * |accuracy(B) - mean confidence(B)|; NaN if empty."""
    conf, correct = _top(probs, labels)
    if not len(conf):
        return float("nan")
    b = _bin_index(conf, bins)
    gap = np.bincount(b, correct, bins) - np.bincount(b, conf, bins)  # |B| * (acc - conf)
    return float(np.abs(gap).sum() / len(conf))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over rows of the squared distance between the probabilities and the one-hot label."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(labels)]
    return float(((probs - onehot) ** 2).sum(1).mean())


def negative_log_likelihood(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean NLL of the labels under softmax(logits / temperature)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-logp[np.arange(len(logp)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T), searched over log T in [-3, 3]
    (T from 0.05 to 20); 1.0 when there is nothing to fit on."""
    if not len(labels):
        return 1.0
    res = minimize_scalar(
        lambda s: negative_log_likelihood(logits, labels, np.exp(s)),
        bounds=(-3.0, 3.0),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return round(float(np.exp(res.x)), 4)


def reliability_table(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """bin, lower, upper, confidence (mean), accuracy, count per equal-width confidence bin.
    Empty bins are left out: a line plot of accuracy against confidence then joins only
    measured points (an empty CSV cell would break the plot or draw as 0)."""
    conf, correct = _top(probs, labels)
    b = _bin_index(conf, bins)
    count = np.bincount(b, minlength=bins)
    keep = count > 0
    edges = np.linspace(0.0, 1.0, bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame(
            {
                "bin": np.arange(bins),
                "lower": edges[:-1],
                "upper": edges[1:],
                "confidence": np.bincount(b, conf, bins) / count,
                "accuracy": np.bincount(b, correct, bins) / count,
                "count": count,
            }
        )
    return table[keep].reset_index(drop=True).round(6)


def risk_coverage(probs: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """threshold, coverage, accuracy, risk when answering only where the top probability is
    >= threshold, thresholds from the highest confidence down (the last row answers all);
    thinned to at most MAX_ROWS rows, first and last kept."""
    conf, correct = _top(probs, labels)
    order = np.argsort(-conf, kind="stable")
    conf, hits = conf[order], np.cumsum(correct[order])
    # The last row of each run of equal confidences: everything up to it is answered.
    ends = np.flatnonzero(np.r_[conf[1:] != conf[:-1], True])[: len(conf)]
    if len(ends) > MAX_ROWS:
        ends = ends[np.unique(np.linspace(0, len(ends) - 1, MAX_ROWS).round().astype(int))]
    answered = ends + 1
    accuracy = hits[ends] / answered
    return pd.DataFrame(
        {
            "threshold": conf[ends],
            "coverage": answered / max(len(conf), 1),
            "accuracy": accuracy,
            "risk": 1.0 - accuracy,
        }
    ).round(6)


def _mean_or_none(x: np.ndarray) -> float | None:
    return round(float(x.mean()), 6) if len(x) else None


def abstain_summary(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Coverage and accuracy of the rows answered (top probability >= threshold), and the
    accuracy over all rows; accuracy_answered is None when nothing is answered."""
    conf, correct = _top(probs, labels)
    answered = conf >= threshold
    return {
        "threshold": float(threshold),
        "coverage": _mean_or_none(answered),
        "answered": int(answered.sum()),
        "accuracy_answered": _mean_or_none(correct[answered]),
        "accuracy_all": _mean_or_none(correct),
    }


def calibration_report(
    logits: np.ndarray, labels: np.ndarray, temperature: float, bins: int = 15
) -> dict:
    """ECE, Brier score and NLL at temperature 1 (before) and at `temperature` (after)."""
    before, after = softmax(logits), softmax(logits, temperature)
    out = {
        "temperature": float(temperature),
        "ece_before": expected_calibration_error(before, labels, bins),
        "ece_after": expected_calibration_error(after, labels, bins),
        "brier_before": brier_score(before, labels),
        "brier_after": brier_score(after, labels),
        "nll_before": negative_log_likelihood(logits, labels),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
    }
    return {k: round(v, 6) for k, v in out.items()}
