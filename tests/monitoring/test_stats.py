"""Estimates without labels, drift tests and over-represented terms, on seeded synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from finsent.monitoring import stats


def calibrated(n: int, seed: int, sharp: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(3, 1.0 / sharp), size=n)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return probs, labels


def test_cbpe_matches_the_accuracy_of_calibrated_probabilities():
    probs, labels = calibrated(20000, 0)
    acc, f1 = stats.expected_performance(probs)
    pred = probs.argmax(1)
    assert abs(acc - (pred == labels).mean()) < 0.01
    from sklearn.metrics import f1_score

    assert abs(f1 - f1_score(labels, pred, average="macro")) < 0.015


def test_the_interval_covers_the_truth_and_narrows_with_more_rows():
    covered = 0
    for seed in range(40):
        probs, labels = calibrated(500, seed)
        (lo, hi), _ = stats.performance_interval(probs, draws=200, seed=seed)
        covered += lo <= (probs.argmax(1) == labels).mean() <= hi
    assert covered >= 34  # a 95 % interval: 38 of 40 expected
    small, _ = stats.performance_interval(calibrated(100, 1)[0])
    large, _ = stats.performance_interval(calibrated(5000, 1)[0])
    assert large[1] - large[0] < (small[1] - small[0]) / 3


def test_atc_threshold_reproduces_validation_accuracy():
    probs, labels = calibrated(2000, 3)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    t = stats.atc_threshold(conf, correct)
    assert stats.atc_estimate(conf, t) == pytest.approx(correct.mean(), abs=0.002)


def test_psi_and_ks_tell_a_shift_from_sampling_noise():
    rng = np.random.default_rng(0)
    ref, same, moved = rng.beta(5, 2, 1000), rng.beta(5, 2, 500), rng.beta(2, 2, 500)
    assert stats.psi(ref, same) < 0.1 < 0.25 < stats.psi(ref, moved)
    assert stats.ks_test(ref, same)[1] > 0.01 > 1e-6 > stats.ks_test(ref, moved)[1]


def test_label_shift_test():
    assert stats.label_shift_test([300, 500, 200], [150, 250, 100])[1] > 0.5
    assert stats.label_shift_test([300, 500, 200], [50, 100, 350])[1] < 1e-10
    assert stats.label_shift_test([0, 10, 0], [0, 7, 0]) == (0.0, 1.0)


def test_excess_share_test():
    assert stats.excess_share_test(25, 500, 24, 484) > 0.4
    assert stats.excess_share_test(45, 500, 24, 484) > 0.001  # 9 % against 5 % of a small validation split
    assert stats.excess_share_test(120, 500, 24, 484) < 1e-10
    assert stats.excess_share_test(0, 0, 24, 484) == 1.0


def test_over_represented_terms_names_what_moved():
    reference = ["Operating profit rose to EUR 10 mn", "Net sales fell 5 %"] * 50
    current = ["$TSLA to the moon, bullish!", "Bitcoin rallies, bullish on crypto"] * 10 + reference[:20]
    terms = stats.over_represented_terms(current, reference, top=3)
    assert terms[0]["term"] == "bullish" and terms[0]["reference_share"] == 0.0
    assert {t["term"] for t in terms} <= {"bullish", "tsla", "moon", "the", "to", "bitcoin", "rallies", "on", "crypto"}
    assert stats.over_represented_terms([], reference) == []
