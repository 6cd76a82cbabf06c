"""Calibration, temperature scaling, abstention and ROC/PR curves on synthetic scores."""

from __future__ import annotations

import numpy as np
import pytest

from facemask.evaluation.calibration import (
    abstain_summary,
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    reliability_table,
    risk_coverage,
    softmax,
)
from facemask.evaluation.curves import curve_metrics, pr_curves, roc_curves
from tests.conftest import train_params

CLASSES = ["with_mask", "without_mask"]


def calibrated(n: int = 20000, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, k))
    p = softmax(logits)
    labels = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)
    return logits, labels


def test_softmax_rows_sum_to_one_and_temperature_flattens():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    assert np.allclose(softmax(logits).sum(1), 1)
    assert softmax(logits)[0, 0] == pytest.approx(1 / (1 + np.exp(-2)))
    assert softmax(logits, 2.0)[0, 0] == pytest.approx(1 / (1 + np.exp(-1)))


def test_ece_is_near_zero_when_calibrated():
    logits, labels = calibrated()
    assert expected_calibration_error(softmax(logits), labels) < 0.02


def test_ece_of_always_certain_70_percent_model_is_0_3():
    probs = np.tile([1.0, 0.0], (100, 1))
    labels = np.r_[np.zeros(70, int), np.ones(30, int)]
    assert expected_calibration_error(probs, labels) == pytest.approx(0.3)


def test_ece_weights_bins_by_their_size():
    # Bin of 0.9: 3 rows, 2 right -> |2/3 - 0.9| * 3/4; bin of 0.6: 1 row, right -> 0.4 / 4.
    probs = np.array([[0.9, 0.1]] * 3 + [[0.6, 0.4]])
    labels = np.array([0, 0, 1, 0])
    want = 3 / 4 * abs(2 / 3 - 0.9) + 1 / 4 * 0.4
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(want)


def test_brier_by_hand():
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    labels = np.array([0, 0])
    # (0.2^2 + 0.2^2 + 0.7^2 + 0.7^2) / 2
    assert brier_score(probs, labels) == pytest.approx((0.08 + 0.98) / 2)


def test_temperature_recovers_over_confidence_and_lowers_ece():
    logits, labels = calibrated()
    hot = 5 * logits  # over-confident: the same ranking, five times the logits
    t = fit_temperature(hot, labels)
    assert t == pytest.approx(5, rel=0.1)
    report = calibration_report(hot, labels, t)
    assert report["ece_after"] < report["ece_before"] / 3
    assert report["nll_after"] < report["nll_before"]
    assert report["brier_after"] < report["brier_before"]
    assert (softmax(hot, t).argmax(1) == softmax(hot).argmax(1)).all()  # accuracy unchanged
    assert set(report) == {
        "temperature",
        *(f"{m}_{w}" for m in ("ece", "brier", "nll") for w in ("before", "after")),
    }


def test_temperature_of_a_calibrated_model_is_near_one():
    logits, labels = calibrated(seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(1, rel=0.05)


def test_reliability_table_keeps_only_filled_bins():
    probs = np.array([[0.95, 0.05], [0.97, 0.03], [0.55, 0.45]])
    labels = np.array([0, 1, 0])
    table = reliability_table(probs, labels, bins=10)
    assert list(table.columns) == ["bin", "lower", "upper", "confidence", "accuracy", "count"]
    assert table["bin"].tolist() == [5, 9]
    assert table["count"].tolist() == [1, 2]
    assert table["accuracy"].tolist() == [1.0, 0.5]
    assert table["confidence"].tolist() == pytest.approx([0.55, 0.96])


def overconfident(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probabilities where confident rows are mostly right, unsure rows coin flips."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.5, 1.0, n)
    right = rng.random(n) < (conf - 0.5) * 2  # right with probability rising with confidence
    labels = np.where(right, 0, 1)
    return np.c_[conf, 1 - conf], labels


def test_abstaining_raises_accuracy_of_the_answered_part():
    probs, labels = overconfident()
    s = abstain_summary(probs, labels, 0.9)
    assert 0 < s["coverage"] < 1
    assert s["answered"] == int((probs.max(1) >= 0.9).sum())
    assert s["accuracy_answered"] > s["accuracy_all"] + 0.2
    tie = abstain_summary(np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([0, 0]), 0.9)
    assert tie["answered"] == 1 and tie["accuracy_answered"] == 1.0  # at the threshold: answered
    none = abstain_summary(probs, labels, 1.01)
    assert none["answered"] == 0
    assert none["coverage"] == 0
    assert none["accuracy_answered"] is None


def test_risk_coverage_is_monotone_and_ends_at_full_coverage():
    probs, labels = overconfident()
    table = risk_coverage(probs, labels)
    assert list(table.columns) == ["threshold", "coverage", "accuracy", "risk"]
    assert len(table) <= 101
    assert (np.diff(table["coverage"]) > 0).all()
    assert (np.diff(table["threshold"]) < 0).all()
    assert table["coverage"].iloc[-1] == 1.0
    all_right = (probs.argmax(1) == labels).mean()
    assert table["accuracy"].iloc[-1] == pytest.approx(all_right)
    assert table["accuracy"].iloc[0] > all_right  # the most confident are right more often
    assert np.allclose(table["risk"], 1 - table["accuracy"])


def test_risk_coverage_counts_ties_together():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])
    table = risk_coverage(probs, np.array([0, 1, 1]))
    assert table["coverage"].tolist() == pytest.approx([2 / 3, 1.0])
    assert table["accuracy"].tolist() == pytest.approx([0.5, 1 / 3])


def test_perfect_scores_give_auc_and_ap_one():
    labels = np.array([0, 0, 0, 1, 1])
    p1 = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    m = curve_metrics(np.c_[1 - p1, p1], labels, CLASSES)
    assert m == {c: {"roc_auc": 1.0, "average_precision": 1.0} for c in CLASSES}


def test_reversed_scores_give_auc_zero():
    labels = np.array([0, 0, 0, 1, 1])
    p1 = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    assert curve_metrics(np.c_[1 - p1, p1], labels, CLASSES)["without_mask"]["roc_auc"] == 0.0


def test_curve_metrics_by_hand_and_by_name():
    # Positives score 0.8 and 0.4, negatives 0.6 and 0.2: 3 of 4 pairs ranked right.
    p1 = np.array([0.8, 0.4, 0.6, 0.2])
    labels = np.array([1, 1, 0, 0])
    m = curve_metrics(np.c_[1 - p1, p1], labels, CLASSES)["without_mask"]
    assert m["roc_auc"] == 0.75
    assert m["average_precision"] == pytest.approx((1 + 2 / 3) / 2)  # precision at each hit
    names = np.array(CLASSES)[labels]
    assert curve_metrics(np.c_[1 - p1, p1], names, CLASSES)["without_mask"] == m


def test_absent_class_gives_none_not_a_crash():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    m = curve_metrics(probs, np.array([0, 1]), ["a", "b", "c"])
    assert m["c"] == {"roc_auc": None, "average_precision": None}
    assert m["a"]["roc_auc"] == 1.0
    assert roc_curves(probs, np.array([0, 1]), ["a", "b", "c"])["c"].empty
    assert pr_curves(probs, np.array([0, 1]), ["a", "b", "c"])["c"].empty


def test_curves_per_class_are_thinned_and_span_the_plot():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 5000)
    p1 = np.clip(labels * 0.3 + rng.random(5000) * 0.7, 0, 1)
    probs = np.c_[1 - p1, p1]
    roc, pr = roc_curves(probs, labels, CLASSES), pr_curves(probs, labels, CLASSES)
    assert set(roc) == set(pr) == set(CLASSES)
    for c in CLASSES:
        assert list(roc[c].columns) == ["fpr", "tpr", "threshold"]
        assert list(pr[c].columns) == ["precision", "recall", "threshold"]
        assert 2 < len(roc[c]) <= 200 and 2 < len(pr[c]) <= 200
        assert (roc[c].iloc[0][["fpr", "tpr"]] == 0).all()
        assert (roc[c].iloc[-1][["fpr", "tpr"]] == 1).all()
        assert (np.diff(roc[c]["fpr"]) >= 0).all()
        assert pr[c]["recall"].max() == 1 and pr[c]["recall"].min() == 0


def test_degraded_valid_copies_join_the_temperature_fit(monkeypatch):
    """Clean valid pictures are all right and confident; their degraded copies are sometimes
    wrong at the same confidence. Fitted on both, the temperature rises (confidences drop)."""
    import torch

    from facemask.data.cache import Split
    from facemask.training import temperature

    n = 40
    labels = torch.arange(n) % 2
    clean = torch.nn.functional.one_hot(labels, 2).float() * 8  # right, p ~ 1
    degraded = clean.clone()
    degraded[::4] = degraded[::4].flip(1)  # a quarter of the copies confidently wrong
    views = []

    def fake_logits(model, split, tp, root, view=None):
        views.append(None if view is None else view[0])
        return clean if view is None else degraded

    monkeypatch.setattr(temperature, "head_logits", fake_logits)
    valid = Split(torch.zeros(n, 3, 8, 8, dtype=torch.uint8), labels, [str(i) for i in range(n)])
    model = torch.nn.Linear(1, 2)
    tp = train_params(degrade={})
    sharp = temperature.valid_temperature(model, valid, train_params(calibration_views=0), None, 0)
    soft = temperature.valid_temperature(
        model, valid, tp.model_copy(update={"calibration_views": 2}), None, seed=3
    )
    assert views[0] is None and views[1] is None
    # Two degraded copies, each its own cached view, apart from the training views' names.
    from facemask.training.augment import named_degraded_view

    assert views[2:] == [named_degraded_view(1000 + k, 3)[0] for k in (0, 1)]
    assert views[2] not in {named_degraded_view(k, 3)[0] for k in range(5)}
    assert sharp < 0.3 and soft > 4 * sharp


def test_best_offset_moves_an_over_called_class_back_and_prefers_no_shift():
    from facemask.training.temperature import best_offset

    # 60 class 0, 30 class 1, 10 class 2; the net adds 1.1 to class 2's log-probability,
    # so 12 of class 0 (its margin 0.5 to 1.0 over class 2) are called class 2.
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(60, int), np.ones(30, int), np.full(10, 2)]
    logp = np.full((100, 3), -5.0)
    logp[np.arange(100), labels] = 0.0
    logp[:12, 2] = -rng.uniform(0.5, 1.0, 12) + 1.1
    b = best_offset(logp, labels, 2)
    # every class-0 row back (> 0.6 needed), no class-2 row lost (< 6 allowed): -0.75 to -2
    # tie; the smallest shift wins
    assert b == -0.75
    assert best_offset(np.log(np.eye(3)[labels] * 0.98 + 0.01), labels, 2) == 0.0


def test_tune_offset_folds_the_offset_into_the_head_bias(monkeypatch):
    import torch

    from facemask.data.cache import Split
    from facemask.training import temperature

    labels = torch.tensor([0] * 8 + [1] * 2)
    logits = torch.zeros(10, 2)
    logits[:, 1] = 1.2  # every row called class 1 (0.6 in log-probability at T = 2) ...
    logits[8:, 1] = 4.0  # ... the real ones by far
    monkeypatch.setattr(temperature, "head_logits", lambda *a, **k: logits)
    model = torch.nn.Linear(4, 2)
    model.get_classifier = lambda: model
    before = model.bias.detach().clone()
    valid = Split(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), labels, [str(i) for i in range(10)])
    offset = temperature.tune_offset(model, valid, train_params(), None, 2.0, k=1)
    logp = torch.log_softmax(logits / 2.0, 1).numpy()
    assert offset == temperature.best_offset(logp, labels.numpy(), 1) == -0.75
    # z_1 + b * T: the calibrated argmax with the offset is the model's own argmax now
    assert model.bias[1].item() == pytest.approx(before[1].item() + offset * 2.0)
    assert model.bias[0].item() == before[0].item()
    shifted = logits + (model.bias - before).detach()
    assert shifted.argmax(1).tolist() == labels.tolist()
