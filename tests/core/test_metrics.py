import numpy as np
import pytest

from finsent.core import metrics


def test_ece_perfectly_calibrated_is_zero():
    # 10 predictions at confidence 0.8, 8 correct: accuracy equals confidence in the only bin.
    conf = np.full(10, 0.8)
    correct = np.array([1] * 8 + [0] * 2)
    assert metrics.expected_calibration_error(conf, correct) == pytest.approx(0.0)


def test_ece_hand_computed_two_bins():
    # bin A: 4 at 0.95, 2 correct (|0.5-0.95| = 0.45); bin B: 6 at 0.55, all correct (|1-0.55| = 0.45)
    conf = np.array([0.95] * 4 + [0.55] * 6)
    correct = np.array([1, 1, 0, 0] + [1] * 6)
    assert metrics.expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(0.4 * 0.45 + 0.6 * 0.45)
    bins = metrics.reliability_bins(conf, correct, n_bins=10)
    assert [(b["count"], b["accuracy"]) for b in bins] == [(6, 1.0), (4, 0.5)]


def test_confidence_one_lands_in_last_bin():
    bins = metrics.reliability_bins([1.0, 0.999], [1, 1], n_bins=10)
    assert len(bins) == 1 and bins[0]["upper"] == 1.0 and bins[0]["count"] == 2


def test_error_types_thresholds():
    correct = [True, True, False, False, False]
    conf = [0.95, 0.59, 0.5, 0.9, 0.899]
    assert metrics.error_types(correct, conf, low=0.6, high=0.9) == [
        "Correct",
        "Low Confidence",
        "Misclassification",
        "High-Confidence Error",
        "Misclassification",
    ]


def test_softmax_and_margin():
    probs = metrics.softmax(np.array([[0.0, 0.0, 0.0], [10.0, 0.0, -10.0]]))
    assert np.allclose(probs.sum(1), 1)
    assert np.allclose(probs[0], 1 / 3)
    assert metrics.margins(np.array([[0.7, 0.2, 0.1]]))[0] == pytest.approx(0.5)


def test_classification_metrics_per_class():
    m = metrics.classification_metrics([0, 1, 2, 2], [0, 2, 2, 2], ("negative", "neutral", "positive"))
    assert m["accuracy"] == 0.75
    assert m["per_class"]["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]


def test_ece_sampling_floor_matches_the_binomial_expectation():
    from scipy.stats import binom

    n, p = 227, 0.95  # one confidence, so one bin: ECE = |k/n - p| with k ~ Binomial(n, p)
    k = np.arange(n + 1)
    exact = float((binom.pmf(k, n, p) * np.abs(k / n - p)).sum())
    assert metrics.ece_sampling_floor(np.full(n, p)) == pytest.approx(exact, rel=0.05)
    assert metrics.ece_sampling_floor(np.ones(50)) == 0.0  # always right at confidence 1: no noise
    # the floor shrinks like 1/sqrt(n): 4x the sentences, about half the floor
    assert metrics.ece_sampling_floor(np.full(4 * n, p)) == pytest.approx(exact / 2, rel=0.1)
