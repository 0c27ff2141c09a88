"""Run comparison on hand-made logs and results: deltas and fixed/broken/changed sentence sets."""

import pandas as pd
import pytest

from finsent.runs import comparison


def log(rows):
    return pd.DataFrame(rows, columns=["text", "true_label", "pred_label", "confidence"])


BASE = log(
    [
        ("rates rise", "negative", "negative", 0.9),  # right -> right
        ("profit up", "positive", "neutral", 0.6),  # wrong -> right: fixed
        ("sales flat", "neutral", "neutral", 0.8),  # right -> wrong: broken
        ("loss widens", "negative", "positive", 0.7),  # wrong -> other wrong: changed
        ("merger done", "neutral", "positive", 0.55),  # wrong -> same wrong: same
        ("only in base", "neutral", "neutral", 0.9),
        ("relabelled", "neutral", "neutral", 0.9),
    ]
)
OTHER = log(
    [
        ("profit up", "positive", "positive", 0.95),
        ("rates rise", "negative", "negative", 0.97),
        ("sales flat", "neutral", "negative", 0.65),
        ("loss widens", "negative", "neutral", 0.5),
        ("merger done", "neutral", "positive", 0.6),
        ("only in other", "neutral", "neutral", 0.9),
        ("relabelled", "positive", "neutral", 0.9),  # a different true label: not the same item
    ]
)


def test_prediction_changes_matched_by_text():
    changes = comparison.prediction_changes(BASE, OTHER)
    kinds = dict(zip(changes["text"], changes["kind"]))
    assert kinds == {
        "rates rise": "same",
        "profit up": "fixed",
        "sales flat": "broken",
        "loss widens": "changed",
        "merger done": "same",
    }
    assert comparison.change_counts(changes) == {"fixed": 1, "broken": 1, "changed": 1, "same": 2}
    row = changes[changes["text"] == "profit up"].iloc[0]
    assert row["confidence_delta"] == pytest.approx(0.35)


def test_flipped_lists_fixed_then_broken_then_changed():
    flips = comparison.flipped(comparison.prediction_changes(BASE, OTHER))
    assert list(flips["kind"]) == ["fixed", "broken", "changed"]
    assert list(flips["text"]) == ["profit up", "sales flat", "loss widens"]


def test_no_change_between_identical_logs():
    changes = comparison.prediction_changes(BASE, BASE)
    assert comparison.change_counts(changes)["same"] == len(BASE) and comparison.flipped(changes).empty


def test_metric_deltas_know_which_direction_is_better():
    a = {"accuracy": 0.80, "macro_f1": 0.70, "ece": 0.10, "avg_confidence": 0.9, "n_test": 100}
    b = {"accuracy": 0.85, "macro_f1": 0.65, "ece": 0.05, "avg_confidence": 0.95, "n_test": 100}
    rows = {r["metric"]: r for r in comparison.metric_deltas(a, b)}
    assert rows["accuracy"]["delta"] == pytest.approx(0.05) and rows["accuracy"]["improved"] is True
    assert rows["macro_f1"]["delta"] == pytest.approx(-0.05) and rows["macro_f1"]["improved"] is False
    assert rows["ece"]["delta"] == pytest.approx(-0.05) and rows["ece"]["improved"] is True  # lower ECE is better
    assert rows["avg_confidence"]["improved"] is None  # neither better nor worse by itself
    assert rows["n_test"]["delta"] == 0 and "ece_calibrated" not in rows  # absent in both: no row


def test_metric_delta_missing_on_one_side():
    rows = {r["metric"]: r for r in comparison.metric_deltas({"accuracy": 0.8, "temperature": 1.4}, {"accuracy": 0.9})}
    assert rows["temperature"]["other"] is None and rows["temperature"]["delta"] is None


def test_per_class_deltas():
    a = {
        "per_class": {
            "negative": {"precision": 0.5, "recall": 0.6, "f1": 0.55},
            "neutral": {"precision": 1, "recall": 1, "f1": 1},
        }
    }
    b = {
        "per_class": {
            "negative": {"precision": 0.7, "recall": 0.6, "f1": 0.65},
            "neutral": {"precision": 0.9, "recall": 1, "f1": 0.95},
        }
    }
    rows = {(r["label"], r["metric"]): r for r in comparison.per_class_deltas(a, b)}
    assert len(rows) == 6
    assert (
        rows[("negative", "precision")]["delta"] == pytest.approx(0.2) and rows[("negative", "precision")]["improved"]
    )
    assert rows[("negative", "recall")]["delta"] == 0 and rows[("negative", "recall")]["improved"] is None
    assert rows[("neutral", "f1")]["delta"] == pytest.approx(-0.05) and rows[("neutral", "f1")]["improved"] is False
