"""Temperature scaling: one scalar T fitted on validation logits by minimising the negative log-likelihood."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from finsent.core import metrics

LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 54.6]


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / T)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    logp = log_softmax(logits / temperature, axis=-1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits, labels) -> float:
    """The T > 0 minimising validation NLL (bounded 1-D search on log T; the NLL is unimodal in log T)."""
    logits = np.asarray(logits, dtype=np.float64)
    if len(logits) == 0 or (logits.argmax(1) == np.asarray(labels)).all():
        return 1.0  # without a validation error the NLL only falls as T -> 0: nothing to fit, leave the model alone
    res = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-5},
    )
    temperature = float(np.exp(res.x))
    # never return a T that is worse than leaving the model alone
    return temperature if nll(logits, labels, temperature) <= nll(logits, labels, 1.0) else 1.0


def logits_from_probs(probs, floor: float = 1e-7) -> np.ndarray:
    """Log-probabilities: logits up to a per-row constant, enough to re-apply a temperature to stored probabilities."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), floor, None))


def calibrated_confidence(logits, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and predicted class after scaling by T (the prediction itself never changes)."""
    probs = metrics.softmax(logits, temperature)
    return probs.max(axis=1), probs.argmax(axis=1)


def calibrate(val_logits, val_labels, test_logits, test_labels, n_bins: int = 15) -> dict:
    """Fit T on validation and report it with validation NLL before/after and test ECE after scaling."""
    val_labels = np.asarray(val_labels)
    if len(val_labels) == 0:
        return {"temperature": 1.0, "ece_calibrated": None, "val_nll_before": None, "val_nll_after": None}
    temperature = fit_temperature(val_logits, val_labels)
    conf, pred = calibrated_confidence(test_logits, temperature)
    return {
        "temperature": temperature,
        "ece_calibrated": metrics.expected_calibration_error(conf, pred == np.asarray(test_labels), n_bins),
        "val_nll_before": nll(val_logits, val_labels, 1.0),
        "val_nll_after": nll(val_logits, val_labels, temperature),
    }


def run_calibration(results: dict, val_logits: dict | None, probs, y_true, n_bins: int = 15) -> dict | None:
    """Calibration of a finished run: stored T (or T fitted on its validation logits) re-applied to the test log.

    Returns temperature, validation NLL before/after, test confidence/correctness before and after scaling,
    test ECE before/after and the ECE a perfectly calibrated model with the scaled confidences would show on this
    many sentences; None when the run has neither a stored T nor validation logits."""
    temperature = results.get("temperature")
    nll_before, nll_after = results.get("val_nll_before"), results.get("val_nll_after")
    fitted = temperature is None
    if fitted:
        if val_logits is None or len(val_logits["labels"]) == 0:
            return None
        temperature = fit_temperature(val_logits["logits"], val_logits["labels"])
        nll_before = nll(val_logits["logits"], val_logits["labels"], 1.0)
        nll_after = nll(val_logits["logits"], val_logits["labels"], temperature)
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    conf_before = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    conf_after, _ = calibrated_confidence(logits_from_probs(probs), temperature)
    ece_after = results.get("ece_calibrated")
    if ece_after is None:
        ece_after = metrics.expected_calibration_error(conf_after, correct, n_bins)
    return {
        "temperature": float(temperature),
        "fitted_here": fitted,
        "val_nll_before": nll_before,
        "val_nll_after": nll_after,
        "confidence_before": conf_before,
        "confidence_after": conf_after,
        "correct": correct,
        "ece_before": metrics.expected_calibration_error(conf_before, correct, n_bins),
        "ece_after": float(ece_after),
        "ece_floor_after": metrics.ece_sampling_floor(conf_after, n_bins),  # ECE from sampling noise alone
        "bins_before": metrics.reliability_bins(conf_before, correct, n_bins),
        "bins_after": metrics.reliability_bins(conf_after, correct, n_bins),
    }
