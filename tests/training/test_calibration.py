"""Temperature scaling on hand-made logits, and the calibration figures the dashboard shows."""

import numpy as np
import pytest

from finsent.core import metrics
from finsent.training import calibration
from runfactory import synthetic_logits


def calibrated_logits(n=3000, seed=0):
    """Logits whose softmax is the true label distribution: sampling labels from them makes T=1 optimal."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, 3))
    probs = metrics.softmax(logits)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return logits, labels


def test_nll_hand_computed():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    assert calibration.nll(logits, [0, 1]) == pytest.approx(-(np.log(0.5) + np.log(0.8)) / 2)
    # T -> large flattens everything to uniform
    assert calibration.nll(logits, [0, 1], 1e6) == pytest.approx(np.log(3), abs=1e-5)


def test_temperature_recovers_overconfidence_and_lowers_nll():
    logits, labels = calibrated_logits()
    overconfident = logits * 3.0  # the same ranking, three times too sharp
    t = calibration.fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    before, after = calibration.nll(overconfident, labels), calibration.nll(overconfident, labels, t)
    assert after < before - 0.1
    # the fitted T is the minimum: nudging it either way is worse
    assert after <= calibration.nll(overconfident, labels, t * 1.1) and after <= calibration.nll(
        overconfident, labels, t / 1.1
    )


def test_temperature_below_one_for_underconfident_and_one_when_calibrated():
    logits, labels = calibrated_logits(seed=1)
    assert calibration.fit_temperature(logits / 2.5, labels) == pytest.approx(1 / 2.5, rel=0.15)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.12)


def test_no_temperature_is_fitted_on_a_validation_split_without_errors():
    # every validation sentence right (an mpnet teacher on AllAgree): the NLL keeps falling as T -> 0, and the
    # bounded search used to return its lower bound (T 0.018), which made the model certain of every answer
    logits = np.array([[3.0, 0.0, -1.0], [0.0, 2.0, 0.5], [-1.0, 0.0, 1.5]])
    labels = np.array([0, 1, 2])
    assert calibration.nll(logits, labels, 0.1) < calibration.nll(logits, labels, 1.0)
    assert calibration.fit_temperature(logits, labels) == 1.0
    assert calibration.fit_temperature(logits, [0, 1, 1]) > 1.0  # one confident error: a softer T is fitted again


def test_calibrate_reports_val_nll_and_lower_test_ece():
    logits, labels = calibrated_logits(n=4000, seed=3)
    logits = logits * 2.5  # over-confident
    val_logits, val_y, test_logits, test_y = logits[:2000], labels[:2000], logits[2000:], labels[2000:]
    out = calibration.calibrate(val_logits, val_y, test_logits, test_y)
    assert set(out) == {"temperature", "ece_calibrated", "val_nll_before", "val_nll_after"}
    assert out["temperature"] == pytest.approx(2.5, rel=0.15)
    assert out["val_nll_after"] < out["val_nll_before"]
    probs = metrics.softmax(test_logits)
    ece_before = metrics.expected_calibration_error(probs.max(1), probs.argmax(1) == test_y)
    assert out["ece_calibrated"] < ece_before / 2
    conf, pred = calibration.calibrated_confidence(test_logits, out["temperature"])
    assert np.array_equal(pred, probs.argmax(1))  # scaling never changes a prediction
    assert out["ece_calibrated"] == pytest.approx(metrics.expected_calibration_error(conf, pred == test_y))


def test_empty_validation_keeps_t_one():
    out = calibration.calibrate(np.zeros((0, 3)), [], np.zeros((2, 3)), [0, 1])
    assert out["temperature"] == 1.0 and out["ece_calibrated"] is None


def test_temperature_reapplied_to_stored_probabilities():
    logits, _ = synthetic_logits(50, seed=5)
    probs = np.round(metrics.softmax(logits), 6)  # as evaluation_log.csv stores them
    conf_exact, _ = calibration.calibrated_confidence(logits, 2.0)
    conf_log, _ = calibration.calibrated_confidence(calibration.logits_from_probs(probs), 2.0)
    assert np.allclose(conf_exact, conf_log, atol=2e-3)


def test_run_calibration_uses_stored_temperature_or_fits_one():
    val_logits, val_y = synthetic_logits(300, seed=6)
    test_logits, test_y = synthetic_logits(300, seed=7)
    probs = metrics.softmax(test_logits)
    stored = calibration.calibrate(val_logits, val_y, test_logits, test_y)
    from_results = calibration.run_calibration(stored, None, probs, test_y)
    fitted = calibration.run_calibration({}, {"logits": val_logits, "labels": val_y}, probs, test_y)
    assert not from_results["fitted_here"] and fitted["fitted_here"]
    assert fitted["temperature"] == pytest.approx(stored["temperature"])
    assert fitted["ece_after"] == pytest.approx(stored["ece_calibrated"], abs=1e-6)
    assert sum(b["count"] for b in fitted["bins_after"]) == 300
    assert calibration.run_calibration({}, None, probs, test_y) is None
