"""`finsent monitor`'s report: predictions cut into windows (rows or time), each with its performance estimated
from the calibrated probabilities, drift tests against the run's reference, novelty, and where it drifts the terms
and sentences that moved.

report.json: {"reference": {...}, "windows": [{start, end, n, estimated_accuracy, estimated_accuracy_ci, accuracy,
drift, novelty_share, tests}, ...], "summary": {...}} with windows in time (or row) order."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from finsent.core.errors import FinsentError
from finsent.core.metrics import classification_metrics, margins
from finsent.monitoring import stats
from finsent.monitoring.config import MonitorThresholds
from finsent.monitoring.reference import Reference, nearest_distance

FORMAT = 1


def cut_windows(data: pd.DataFrame, kind: str, size: int | str) -> list[tuple[object, object, pd.DataFrame]]:
    """(start, end, rows) per window: every `size` rows (in time order where there is a time), or per time span."""
    has_time = "time" in data.columns and data["time"].notna().all()
    if kind == "time":
        if not has_time:
            raise FinsentError(
                "--window with a time span needs a time for every row (serve's logs have one; for other tables name "
                "a column with --time_column), or give a number of rows, e.g. --window 500"
            )
        offset = pd.tseries.frequencies.to_offset(size)
        return [
            (start.isoformat(), (start + offset).isoformat(), part.reset_index(drop=True))
            for start, part in data.groupby(pd.Grouper(key="time", freq=size, closed="left", label="left"))
            if len(part)
        ]
    if has_time:
        data = data.sort_values("time", kind="stable").reset_index(drop=True)
    return [
        (i, min(i + size, len(data)), data.iloc[i : i + size].reset_index(drop=True)) for i in range(0, len(data), size)
    ]


def _drift_tests(part: pd.DataFrame, probs: np.ndarray, ref: Reference, th: MonitorThresholds, dist) -> dict:
    """Each test's statistic, p-value or value, and whether it flags the window."""
    k = len(ref.labels)
    counts = (np.bincount(ref.test_probs.argmax(1), minlength=k), np.bincount(probs.argmax(1), minlength=k))
    chi2, p = stats.label_shift_test(*counts)
    moved = float(np.abs(counts[0] / counts[0].sum() - counts[1] / counts[1].sum()).max())
    tests = {
        "label_shares": {
            "statistic": chi2,
            "p_value": p,
            "largest_change": moved,
            "drift": p < th.alpha and moved >= th.share_min,
        }
    }
    for name, ref_values, values in (
        ("confidence", ref.test_probs.max(1), probs.max(1)),
        ("margin", margins(ref.test_probs), margins(probs)),
    ):
        value = stats.psi(ref_values, values)
        tests[f"{name}_psi"] = {"value": value, "drift": value > th.psi}
        statistic, p = stats.ks_test(ref_values, values)
        tests[f"{name}_ks"] = {"statistic": statistic, "p_value": p, "drift": p < th.alpha and statistic >= th.ks_min}
    lengths = part["text_length"].dropna().to_numpy() if "text_length" in part else np.zeros(0)
    if len(lengths) >= th.min_rows:
        statistic, p = stats.ks_test(ref.test_lengths, lengths)
        tests["text_length_ks"] = {
            "statistic": statistic,
            "p_value": p,
            "drift": p < th.alpha and statistic >= th.ks_min,
        }
    if dist is not None and np.isfinite(dist).sum() >= th.min_rows:
        seen = dist[np.isfinite(dist)]
        novel = int((seen > ref.novelty_threshold).sum())
        val_novel, val_n = ref.novelty_val
        p = stats.excess_share_test(novel, len(seen), val_novel, val_n)
        share, val_share = novel / len(seen), val_novel / val_n
        tests["novelty"] = {
            "share": share,
            "validation_share": val_share,
            "p_value": p,
            "drift": p < th.alpha and share - val_share >= th.novelty_min,
        }
    return tests


def _evidence(part: pd.DataFrame, ref: Reference, th: MonitorThresholds, dist) -> tuple[list, list]:
    """A drifting window's most over-represented terms and example sentences (the most novel ones where known)."""
    if "text" not in part or th.top_terms == 0 and th.examples == 0:
        return [], []
    texts = part["text"].astype(str).tolist()
    terms = stats.over_represented_terms(texts, ref.test_texts, th.top_terms)
    if dist is not None and np.isfinite(dist).any():
        order = np.argsort(-np.nan_to_num(dist, nan=-1.0), kind="stable")
    else:
        top = {t["term"] for t in terms[:3]}
        order = np.array([i for i, t in enumerate(texts) if top & set(stats.words(t))], dtype=int)
    labels = np.array(ref.labels)[part[[f"prob_{x}" for x in ref.labels]].to_numpy().argmax(1)]
    examples = [
        {
            "text": texts[i],
            "label": str(labels[i]),
            **({"novelty_distance": float(dist[i])} if dist is not None and np.isfinite(dist[i]) else {}),
        }
        for i in order[: th.examples]
    ]
    return terms, examples


def window_record(part: pd.DataFrame, ref: Reference, th: MonitorThresholds, dist: np.ndarray | None) -> dict:
    """One window of report.json."""
    probs = part[[f"prob_{x}" for x in ref.labels]].to_numpy(dtype=np.float64)
    n = len(probs)
    est_acc, est_f1 = stats.expected_performance(probs)
    acc_ci, f1_ci = stats.performance_interval(probs, th.draws, th.level, th.seed)
    record = {
        "n": n,
        "estimated_accuracy": est_acc,
        "estimated_accuracy_ci": list(acc_ci),
        "estimated_macro_f1": est_f1,
        "estimated_macro_f1_ci": list(f1_ci),
        "estimated_accuracy_atc": stats.atc_estimate(probs.max(1), ref.atc_threshold),
        "accuracy": None,
        "macro_f1": None,
        "n_labelled": 0,
        "label_shares": dict(zip(ref.labels, np.bincount(probs.argmax(1), minlength=len(ref.labels)) / n)),
        "mean_confidence": float(probs.max(1).mean()),
        "novelty_share": None,
    }
    truth = part["truth"] if "truth" in part else pd.Series([None] * n)
    labelled = truth.notna().to_numpy()
    if labelled.any():
        ids = {name: i for i, name in enumerate(ref.labels)}
        y_true = np.array([ids[t] for t in truth[labelled]])
        found = classification_metrics(y_true, probs[labelled].argmax(1), ref.labels)
        record.update(accuracy=found["accuracy"], macro_f1=found["macro_f1"], n_labelled=int(labelled.sum()))
        record["estimated_accuracy_labelled"] = float(probs[labelled].max(1).mean())  # the estimate on those rows
    if dist is not None and np.isfinite(dist).any():
        record["novelty_share"] = float(np.mean(dist[np.isfinite(dist)] > ref.novelty_threshold))
    record["tests"] = _drift_tests(part, probs, ref, th, dist) if n >= th.min_rows else {}
    record["drift"] = any(t["drift"] for t in record["tests"].values())
    record["drifting_tests"] = [name for name, t in record["tests"].items() if t["drift"]]
    record["top_terms"], record["examples"] = _evidence(part, ref, th, dist) if record["drift"] else ([], [])
    return record


def novelty_distances(data: pd.DataFrame, ref: Reference) -> np.ndarray | None:
    """Each row's distance to its nearest training sentence (NaN without a text); None where novelty is off."""
    if ref.train_embeddings is None or ref.encoder is None or "text" not in data:
        return None
    texts = data["text"].astype(str).tolist()
    has = np.array([bool(t.strip()) for t in texts])
    dist = np.full(len(texts), np.nan, dtype=np.float64)
    if has.any():
        dist[has] = nearest_distance(ref.encoder([t for t, h in zip(texts, has) if h]), ref.train_embeddings)
    return dist


def monitor(data: pd.DataFrame, ref: Reference, window: tuple[str, int | str], th: MonitorThresholds) -> dict:
    """The whole report (without where the inputs came from: the caller adds `inputs`)."""
    data = data.copy()
    data["_row"] = np.arange(len(data))
    dist_all = novelty_distances(data, ref)
    windows = []
    for index, (start, end, part) in enumerate(cut_windows(data, *window)):
        dist = None if dist_all is None else dist_all[part["_row"].to_numpy()]
        record = {"index": index, "start": start, "end": end, **window_record(part, ref, th, dist)}
        if "time" in part and part["time"].notna().all() and len(part):
            record["time_start"], record["time_end"] = part["time"].min().isoformat(), part["time"].max().isoformat()
        windows.append(record)
    flagged = [w for w in windows if w["drift"]]
    labelled = [w for w in windows if w["accuracy"] is not None]
    summary = {
        "rows": int(len(data)),
        "windows": len(windows),
        "drifting_windows": len(flagged),
        "first_drifting_window": flagged[0]["index"] if flagged else None,
        "rows_until_first_drift": int(sum(w["n"] for w in windows[: flagged[0]["index"] + 1])) if flagged else None,
        "min_estimated_accuracy": min((w["estimated_accuracy"] for w in windows), default=None),
        "mean_abs_estimate_error": (
            float(np.mean([abs(w["estimated_accuracy_labelled"] - w["accuracy"]) for w in labelled]))
            if labelled
            else None
        ),
    }
    return {
        "finsent_monitor": FORMAT,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "window": {"kind": window[0], "size": window[1]},
        "thresholds": vars(th),
        "reference": ref.summary(),
        "windows": windows,
        "summary": summary,
    }


def crossed(report: dict, fail_on: dict) -> list[str]:
    """Why --fail_on fails the run: one reason per condition crossed (empty when none is)."""
    reasons = []
    flagged = [w for w in report["windows"] if w["drift"]]
    if fail_on.get("drift") and flagged:
        first = flagged[0]
        reasons.append(
            f"drift in {len(flagged)} of {len(report['windows'])} windows (first: window {first['index']}, "
            f"{', '.join(first['drifting_tests'])})"
        )
    below = fail_on.get("accuracy_below")
    if below is not None:  # windows too small for tests are too small to fail on
        low = [
            w
            for w in report["windows"]
            if w["estimated_accuracy"] < below and w["n"] >= report["thresholds"]["min_rows"]
        ]
        if low:
            worst = min(low, key=lambda w: w["estimated_accuracy"])
            reasons.append(
                f"estimated accuracy below {below:g} in {len(low)} windows (lowest {worst['estimated_accuracy']:.3f} "
                f"in window {worst['index']})"
            )
    return reasons
