"""monitor's windows, drift and estimates against a reference, and --fail_on, on seeded synthetic predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finsent.core.errors import FinsentError
from finsent.monitoring import stats
from finsent.monitoring.config import MonitorThresholds
from finsent.monitoring.reference import Reference
from finsent.monitoring.report import crossed, cut_windows, monitor

LABELS = ("negative", "neutral", "positive")


def draw(n: int, seed: int, alpha=(0.3, 0.3, 0.3), length=(60, 160)):
    """Probabilities, labels drawn from them (calibrated) and sentence lengths."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(alpha, size=n)
    truth = np.array([rng.choice(3, p=p) for p in probs])
    texts = ["word " * (int(rng.integers(*length)) // 5) for _ in range(n)]
    return probs, truth, texts


def reference(seed: int = 0) -> Reference:
    probs, truth, texts = draw(500, seed)
    return Reference(
        version="v1",
        labels=LABELS,
        temperature=1.0,
        results={"accuracy": float((probs.argmax(1) == truth).mean()), "macro_f1": 0.8},
        test_probs=probs,
        test_truth=truth,
        test_texts=texts,
        atc_threshold=stats.atc_threshold(probs.max(1), probs.argmax(1) == truth),
    )


def frame(probs, truth, texts, start="2026-12-01") -> pd.DataFrame:
    data = pd.DataFrame(probs, columns=[f"prob_{x}" for x in LABELS])
    data["truth"] = [LABELS[t] for t in truth]
    data["text"] = texts
    data["text_length"] = [float(len(t)) for t in texts]
    data["time"] = pd.date_range(start, periods=len(probs), freq="1min", tz="UTC")
    return data


def test_in_domain_windows_do_not_drift_and_the_estimate_is_close():
    ref = reference()
    probs, truth, texts = draw(2000, 1)
    report = monitor(frame(probs, truth, texts), ref, ("rows", 500), MonitorThresholds())
    assert [w["n"] for w in report["windows"]] == [500] * 4
    assert report["summary"]["drifting_windows"] == 0
    for w in report["windows"]:
        assert abs(w["estimated_accuracy"] - w["accuracy"]) < 0.05
        lo, hi = w["estimated_accuracy_ci"]
        assert lo <= w["estimated_accuracy"] <= hi
        assert w["novelty_share"] is None and "novelty" not in w["tests"]
    assert report["reference"]["test_accuracy"] == ref.results["accuracy"]
    assert crossed(report, {"drift": True, "accuracy_below": None}) == []


def test_a_shifted_feed_drifts_and_names_its_terms():
    ref = reference()
    probs, truth, same = draw(500, 2)
    shifted, truth2, _ = draw(500, 3, alpha=(0.8, 0.8, 0.8), length=(20, 60))
    texts = same + ["bullish $TSLA moon " + "x" * (i % 30) for i in range(500)]
    data = frame(np.vstack([probs, shifted]), np.concatenate([truth, truth2]), texts)
    report = monitor(data, ref, ("rows", 500), MonitorThresholds())
    first, second = report["windows"]
    assert not first["drift"] and second["drift"]
    assert {"confidence_ks", "text_length_ks"} <= set(second["drifting_tests"])
    assert "bullish" in [t["term"] for t in second["top_terms"]] and second["examples"]
    assert report["summary"]["first_drifting_window"] == 1 and report["summary"]["rows_until_first_drift"] == 1000
    reasons = crossed(report, {"drift": True, "accuracy_below": 0.99})
    assert len(reasons) == 2 and "window 1" in reasons[0]


def test_time_windows_follow_the_clock():
    ref = reference()
    probs, truth, texts = draw(180, 4)
    report = monitor(frame(probs, truth, texts), ref, ("time", "1h"), MonitorThresholds())
    assert [w["n"] for w in report["windows"]] == [60, 60, 60]
    assert report["windows"][1]["start"].startswith("2026-12-01T01:00")


def test_a_time_window_without_times_is_one_line():
    probs, truth, texts = draw(10, 5)
    data = frame(probs, truth, texts).drop(columns="time")
    with pytest.raises(FinsentError, match="--time_column"):
        cut_windows(data, "time", "1h")
    assert [len(p) for _, _, p in cut_windows(data, "rows", 4)] == [4, 4, 2]


def test_week_windows_start_at_their_left_edge():
    ref = reference()
    probs, truth, texts = draw(600, 6)
    data = frame(probs, truth, texts)
    data["time"] = pd.date_range("2026-12-01", periods=600, freq="1h", tz="UTC")
    report = monitor(data, ref, ("time", "1W"), MonitorThresholds())
    assert sum(w["n"] for w in report["windows"]) == 600
    for w in report["windows"]:
        assert w["start"] <= w["time_start"] and w["time_end"] < w["end"]


def test_tiny_differences_on_huge_windows_are_not_drift():
    """p-values shrink with n: a slightly flatter feed is significant on 50,000 rows, and not worth an alarm."""
    probs, truth, texts = draw(20000, 0)
    ref = Reference(
        version="v1",
        labels=LABELS,
        temperature=1.0,
        results={"accuracy": 0.8},
        test_probs=probs,
        test_truth=truth,
        test_texts=texts,
        atc_threshold=0.5,
    )
    probs, truth, texts = draw(50000, 7, alpha=(0.32, 0.32, 0.32))
    report = monitor(frame(probs, truth, texts), ref, ("rows", 50000), MonitorThresholds())
    tests = report["windows"][0]["tests"]
    assert tests["confidence_ks"]["p_value"] < 1e-6 and tests["confidence_ks"]["statistic"] < 0.05
    assert not report["windows"][0]["drift"]


def test_accuracy_below_skips_windows_too_small_to_test():
    ref = reference()
    probs, truth, texts = draw(503, 8)
    probs[500:] = [0.4, 0.3, 0.3]  # a last window of 3 unsure rows
    report = monitor(frame(probs, truth, texts), ref, ("rows", 500), MonitorThresholds())
    assert report["windows"][1]["n"] == 3 and report["windows"][1]["estimated_accuracy"] < 0.5
    assert crossed(report, {"drift": False, "accuracy_below": 0.5}) == []
