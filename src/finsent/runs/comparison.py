"""Compare two runs: metric deltas, per-class deltas and the sentences whose prediction changed (matched by text)."""

from __future__ import annotations

import pandas as pd

# (key, label, higher is better)
METRICS = (
    ("accuracy", "accuracy", True),
    ("macro_f1", "macro-F1", True),
    ("avg_confidence", "average confidence", None),
    ("ece", "ECE", False),
    ("ece_calibrated", "ECE after temperature scaling", False),
    ("temperature", "temperature", None),
    ("n_test", "test sentences", None),
    ("n_train", "training sentences", None),
    ("trainable_percent", "trainable %", None),
    ("train_runtime_s", "training time (s)", None),
)
CLASS_METRICS = ("precision", "recall", "f1")
CHANGE_KINDS = ("fixed", "broken", "changed", "same")


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metric_deltas(base: dict, other: dict) -> list[dict]:
    """One row per headline metric: base, other, other - base and whether that is an improvement."""
    rows = []
    for key, label, higher_better in METRICS:
        a, b = _num(base.get(key)), _num(other.get(key))
        if a is None and b is None:
            continue
        delta = None if a is None or b is None else b - a
        better = None if delta is None or higher_better is None or delta == 0 else (delta > 0) == higher_better
        rows.append({"metric": key, "label": label, "base": a, "other": b, "delta": delta, "improved": better})
    return rows


def per_class_deltas(base: dict, other: dict) -> list[dict]:
    """One row per class and metric (precision, recall, F1) with the delta."""
    rows = []
    for label in base.get("per_class", {}):
        if label not in other.get("per_class", {}):
            continue
        for name in CLASS_METRICS:
            a, b = _num(base["per_class"][label].get(name)), _num(other["per_class"][label].get(name))
            delta = None if a is None or b is None else b - a
            rows.append(
                {
                    "label": label,
                    "metric": name,
                    "base": a,
                    "other": b,
                    "delta": delta,
                    "improved": None if not delta else delta > 0,
                }
            )
    return rows


def prediction_changes(base_log: pd.DataFrame, other_log: pd.DataFrame) -> pd.DataFrame:
    """Sentences (an entity run's (text, entity) pairs) scored by both runs (same text and true label) with how the
    prediction moved.

    kind: fixed (wrong -> right), broken (right -> wrong), changed (wrong -> another wrong), same."""
    key = ["text", "entity"] if "entity" in base_log.columns and "entity" in other_log.columns else ["text"]
    cols = [*key, "true_label", "pred_label", "confidence"]
    a = base_log[cols].drop_duplicates(key)
    b = other_log[cols].drop_duplicates(key)
    m = a.merge(b, on=[*key, "true_label"], suffixes=("_base", "_other"))
    right_a = m["pred_label_base"] == m["true_label"]
    right_b = m["pred_label_other"] == m["true_label"]
    kind = pd.Series("same", index=m.index)
    kind[~right_a & right_b] = "fixed"
    kind[right_a & ~right_b] = "broken"
    kind[~right_a & ~right_b & (m["pred_label_base"] != m["pred_label_other"])] = "changed"
    m.insert(0, "kind", kind)
    m["confidence_delta"] = m["confidence_other"] - m["confidence_base"]
    return m.reset_index(drop=True)


def change_counts(changes: pd.DataFrame) -> dict:
    return {k: int((changes["kind"] == k).sum()) for k in CHANGE_KINDS}


def flipped(changes: pd.DataFrame) -> pd.DataFrame:
    """Only the sentences whose prediction changed, fixed first, then broken, then changed; most confident first."""
    order = {"fixed": 0, "broken": 1, "changed": 2}
    out = changes[changes["kind"] != "same"].copy()
    out["_order"] = out["kind"].map(order)
    return (
        out.sort_values(["_order", "confidence_other"], ascending=[True, False])
        .drop(columns="_order")
        .reset_index(drop=True)
    )
