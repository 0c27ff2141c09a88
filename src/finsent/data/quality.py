"""Suspected label issues by confident learning (cleanlab) on out-of-sample predicted probabilities.

The test-split probabilities in the evaluation log are out-of-sample: the test split was never trained on."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from finsent.data.labels import LABELS

ISSUE_COLUMNS = ["rank", "sample_id", "text", "given_label", "suggested_label", "label_quality", "suggested_confidence"]


def label_quality_scores(labels, pred_probs) -> np.ndarray:
    """Per-sentence label quality in [0, 1] (cleanlab self-confidence: the probability of the given label)."""
    from cleanlab.rank import get_label_quality_scores

    return np.asarray(get_label_quality_scores(np.asarray(labels), np.asarray(pred_probs), method="self_confidence"))


def find_issue_indices(labels, pred_probs) -> np.ndarray:
    """Indices of suspected label issues, most likely first (cleanlab confident learning)."""
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    pred_probs = pred_probs / pred_probs.sum(axis=1, keepdims=True)  # the log rounds to 6 decimals
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return np.asarray(
                find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence"), dtype=int
            )
        except (ValueError, IndexError):
            # too few sentences per class for confident learning: flag disagreements, least likely label first
            idx = np.flatnonzero(pred_probs.argmax(axis=1) != labels)
            return idx[np.argsort(pred_probs[idx, labels[idx]], kind="stable")]


def label_issues(log: pd.DataFrame) -> pd.DataFrame:
    """Suspected label issues of one evaluation log, ranked: given vs suggested label, quality score, sentence."""
    probs = log[[f"prob_{name}" for name in LABELS]].to_numpy(dtype=np.float64)
    labels = log["true_label"].map({n: i for i, n in enumerate(LABELS)}).to_numpy(dtype=np.int64)
    if len(labels) == 0:
        return pd.DataFrame(columns=ISSUE_COLUMNS)
    idx = find_issue_indices(labels, probs)
    quality = label_quality_scores(labels, probs)
    suggested = probs.argmax(axis=1)
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(idx) + 1),
            "sample_id": log["sample_id"].to_numpy()[idx],
            "text": log["text"].to_numpy()[idx],
            "given_label": [LABELS[i] for i in labels[idx]],
            "suggested_label": [LABELS[i] for i in suggested[idx]],
            "label_quality": quality[idx],
            "suggested_confidence": probs[idx, suggested[idx]],
        },
        columns=ISSUE_COLUMNS,
    )
