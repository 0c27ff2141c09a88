"""Pure metric functions: classification metrics, calibration and error attribution."""

from __future__ import annotations

import numpy as np

ERROR_TYPES = ("Correct", "Low Confidence", "Misclassification", "High-Confidence Error")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def classification_metrics(y_true, y_pred, labels: tuple[str, ...]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support  # 0.8 s

    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def _bin_index(confidence: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges and each confidence's equal-width bin on (0, 1] (a confidence of 0 joins the first bin)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return edges, np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


def reliability_bins(confidence, correct, n_bins: int = 15) -> list[dict]:
    """Equal-width confidence bins on (0, 1]: count, mean confidence and accuracy of each non-empty bin."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges, which = _bin_index(confidence, n_bins)
    bins = []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            bins.append(
                {
                    "lower": float(edges[b]),
                    "upper": float(edges[b + 1]),
                    "count": int(mask.sum()),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    return bins


def expected_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width bins."""
    n = len(confidence)
    if n == 0:
        return float("nan")
    return float(
        sum(
            b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(confidence, correct, n_bins)
        )
    )


def ece_sampling_floor(confidence, n_bins: int = 15, n_draws: int = 2000, seed: int = 0) -> float:
    """Expected ECE of a perfectly calibrated model with these confidences: what sampling noise alone gives.

    Each draw marks sample i correct with probability confidence[i]; on a few hundred sentences this floor is
    of the order of 0.02, so a measured ECE near it says nothing about miscalibration."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if len(confidence) == 0:
        return float("nan")
    onehot = np.eye(n_bins)[_bin_index(confidence, n_bins)[1]]  # (n, bins), the same binning as reliability_bins
    expected = confidence @ onehot  # per bin: the sum of confidences
    rng, total = np.random.default_rng(seed), 0.0
    per_chunk = max(1, 2_000_000 // len(confidence))  # draws at a time: bounded memory on large evaluation sets
    for start in range(0, n_draws, per_chunk):
        correct = rng.random((min(per_chunk, n_draws - start), len(confidence))) < confidence
        total += float(np.abs(correct @ onehot - expected).sum())  # per draw and bin: |#correct - expected|
    return total / n_draws / len(confidence)


def error_types(correct, confidence, low: float = 0.6, high: float = 0.9) -> list[str]:
    """Correct / Low Confidence (correct, conf < low) / Misclassification (wrong, conf < high) / High-Confidence Error."""
    out = []
    for ok, conf in zip(correct, confidence):
        if ok:
            out.append("Low Confidence" if conf < low else "Correct")
        else:
            out.append("High-Confidence Error" if conf >= high else "Misclassification")
    return out


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row."""
    top = np.sort(probs, axis=-1)
    return top[:, -1] - top[:, -2]


def per_source_metrics(y_true, probs: np.ndarray, sources: list[str], labels: tuple[str, ...]) -> dict[str, dict]:
    """accuracy, macro-F1, ECE and per-class metrics of each source's rows (sources in order of first appearance)."""
    y_true = np.asarray(y_true)
    sources = np.asarray(sources)
    out = {}
    for name in dict.fromkeys(sources.tolist()):
        rows = sources == name
        pred = probs[rows].argmax(axis=1)
        conf = probs[rows].max(axis=1)
        found = classification_metrics(y_true[rows], pred, labels)
        out[name] = {
            "accuracy": found["accuracy"],
            "macro_f1": found["macro_f1"],
            "ece": expected_calibration_error(conf, pred == y_true[rows]),
            "per_class": found["per_class"],
        }
    return out


def mixed_accuracy(texts: list[str], entities: list[str], y_true, y_pred) -> tuple[float | None, int]:
    """Accuracy on the entities of texts whose entities carry different gold labels (where a sentence-level model can
    be right for one side only), and how many such rows; None when there are none."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    key = [" ".join(t.split()).casefold() for t in texts]
    labels_of: dict[str, set] = {}
    for k, label in zip(key, y_true.tolist()):
        labels_of.setdefault(k, set()).add(label)
    rows = np.array([len(labels_of[k]) > 1 for k in key], dtype=bool)
    if not rows.any():
        return None, 0
    return float((y_true[rows] == y_pred[rows]).mean()), int(rows.sum())
