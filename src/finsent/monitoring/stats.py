"""Pure statistics of model health without labels: performance estimated from calibrated probabilities, drift tests
and over-represented terms.

Performance: confidence-based performance estimation (CBPE, as NannyML names it): where the probabilities are
calibrated, a sentence predicted with confidence p is right with probability p, so the expected accuracy of a window
is the mean confidence and the expected confusion matrix follows from the probabilities; the interval comes from
drawing labels from those probabilities. ATC (average thresholded confidence, Garg et al. 2022) is the second
estimate: the share of a window above the confidence threshold at which validation's share equals its accuracy.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np
from scipy import stats

PSI_FLOOR = 1e-4  # a bin share below this counts as this, so that an empty bin gives a finite PSI
WORD = re.compile(r"[^\W\d_][\w'&.-]*[^\W_]|[^\W\d_]", re.UNICODE)


def _macro_f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=np.float64), where=denom > 0)
    return float(f1.mean())


def expected_performance(probs: np.ndarray) -> tuple[float, float]:
    """CBPE: expected accuracy and macro-F1 of argmax predictions whose probabilities are calibrated."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    k = probs.shape[1]
    tp = np.array([probs[pred == c, c].sum() for c in range(k)])
    fp = np.array([(pred == c).sum() for c in range(k)]) - tp
    fn = probs.sum(axis=0) - tp
    return float(probs.max(axis=1).mean()), _macro_f1_from_counts(tp, fp, fn)


def performance_interval(
    probs: np.ndarray, draws: int = 200, level: float = 0.95, seed: int = 0
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Central intervals of accuracy and macro-F1 over label sets drawn from the probabilities (the window's own
    sampling spread, given calibration holds)."""
    probs = np.asarray(probs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    pred = probs.argmax(axis=1)
    k = probs.shape[1]
    cum = probs.cumsum(axis=1)
    accs, f1s = np.empty(draws), np.empty(draws)
    for d in range(draws):
        u = rng.random(len(probs))[:, None]
        truth = np.minimum((u > cum).sum(axis=1), k - 1)
        right = truth == pred
        accs[d] = right.mean()
        tp = np.bincount(pred[right], minlength=k).astype(np.float64)
        fp = np.bincount(pred, minlength=k) - tp
        fn = np.bincount(truth, minlength=k) - tp
        f1s[d] = _macro_f1_from_counts(tp, fp, fn)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return (
        (float(np.percentile(accs, lo)), float(np.percentile(accs, hi))),
        (float(np.percentile(f1s, lo)), float(np.percentile(f1s, hi))),
    )


def atc_threshold(confidence: np.ndarray, correct: np.ndarray) -> float:
    """The confidence threshold t at which the share of validation sentences above t equals validation accuracy."""
    confidence = np.sort(np.asarray(confidence, dtype=np.float64))
    accuracy = float(np.mean(correct))
    if accuracy >= 1.0:
        return float(confidence[0]) - 1e-12
    return float(np.quantile(confidence, 1.0 - accuracy))


def atc_estimate(confidence: np.ndarray, threshold: float) -> float:
    return float(np.mean(np.asarray(confidence) > threshold))


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of current against reference over the reference's quantile bins."""
    reference, current = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(current)
    ref, cur = np.maximum(ref, PSI_FLOOR), np.maximum(cur, PSI_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_test(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value."""
    result = stats.ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


def label_shift_test(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity of the predicted-label counts of reference and window (both samples count)."""
    table = np.vstack([np.asarray(reference_counts), np.asarray(current_counts)]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    statistic, p_value, _, _ = stats.chi2_contingency(table)
    return float(statistic), float(p_value)


def excess_share_test(count: int, n: int, ref_count: int, ref_n: int) -> float:
    """One-sided p-value (Fisher's exact test) that a window's share count/n exceeds the reference's ref_count/ref_n.

    Both are samples: the novelty threshold is a quantile of validation, so its own share is known only as well as
    validation's size allows; a one-sample test against the nominal share alarms too often (bench/monitor.py)."""
    if n == 0:
        return 1.0
    table = [[int(count), int(n - count)], [int(ref_count), int(ref_n - ref_count)]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def words(text: str) -> list[str]:
    """Lower-cased words (letters first; tickers, cashtags' names and hyphenated words kept whole)."""
    return [w.lower() for w in WORD.findall(text)]


def over_represented_terms(
    current: Iterable[str], reference: Iterable[str], top: int = 10, min_count: int = 3
) -> list[dict]:
    """Terms most over-represented in current texts against reference texts: smoothed ratio of document shares."""
    cur_docs = [set(words(t)) for t in current]
    ref_docs = [set(words(t)) for t in reference]
    if not cur_docs or not ref_docs:
        return []
    cur, ref = Counter(w for d in cur_docs for w in d), Counter(w for d in ref_docs for w in d)
    n_cur, n_ref = len(cur_docs), len(ref_docs)
    rows = []
    for term, count in cur.items():
        if count < min_count:
            continue
        cur_share, ref_share = count / n_cur, ref[term] / n_ref
        ratio = (count + 0.5) / (n_cur + 1) / ((ref[term] + 0.5) / (n_ref + 1))
        rows.append(
            {"term": term, "count": count, "share": cur_share, "reference_share": ref_share, "ratio": float(ratio)}
        )
    rows.sort(key=lambda r: (-r["ratio"], -r["count"], r["term"]))
    return rows[:top]
