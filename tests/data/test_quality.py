"""Label-issue ranking with cleanlab: planted label flips must be found and ranked first."""

import numpy as np
import pandas as pd
import pytest

from finsent.data.labels import LABELS
from finsent.data.quality import ISSUE_COLUMNS, label_issues
from finsent.runs.folder import read_log


def flip(log: pd.DataFrame, idx) -> pd.DataFrame:
    """Give each chosen sentence a wrong label: the predicted label's next class."""
    out = log.copy()
    for i in idx:
        given = LABELS.index(out.at[i, "pred_label"])
        out.at[i, "true_label"] = LABELS[(given + 1) % len(LABELS)]
    return out


def synthetic_log(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=[0.2, 0.55, 0.25])
    probs = rng.dirichlet([1, 1, 1], n) * 0.4  # a model that is always right, with varied confidence
    probs[np.arange(n), y] += 0.6
    return pd.DataFrame(
        {
            "sample_id": range(n),
            "text": [f"s{i}" for i in range(n)],
            "true_label": [LABELS[i] for i in y],
            "pred_label": [LABELS[i] for i in probs.argmax(1)],
            **{f"prob_{k}": probs[:, j] for j, k in enumerate(LABELS)},
        }
    )


def test_planted_flips_rank_first_on_synthetic_log():
    log = synthetic_log()
    conf = log[[f"prob_{k}" for k in LABELS]].max(axis=1)
    planted = list(conf.sort_values(ascending=False).index[:5])  # confident predictions, now given a wrong label
    issues = label_issues(flip(log, planted))
    assert list(issues.columns) == ISSUE_COLUMNS
    assert set(issues["sample_id"]) == set(planted)  # a clean model on clean labels: only the flips
    assert list(issues["rank"]) == [1, 2, 3, 4, 5]
    assert (issues["given_label"] != issues["suggested_label"]).all()
    assert issues["label_quality"].is_monotonic_increasing


def test_planted_flips_found_in_a_real_run(lora_run):
    log = read_log(lora_run)
    before = label_issues(log)
    confident = log[log["is_correct"]].nlargest(30, "confidence")  # flip a few confident, correct labels
    planted = list(confident.sample(6, random_state=0).index)
    issues = label_issues(flip(log, planted))
    flagged = set(issues["sample_id"])
    planted_ids = set(log.loc[planted, "sample_id"])
    assert planted_ids <= flagged
    # each planted flip is more suspicious than any sentence whose label and prediction still agree
    quality = dict(zip(issues["sample_id"], issues["label_quality"]))
    clean = log.drop(index=planted)
    clean_quality = clean.apply(lambda r: r[f"prob_{r['true_label']}"], axis=1)
    assert max(quality[s] for s in planted_ids) < clean_quality[clean["is_correct"]].min()
    assert len(issues) > len(before)
    for sid in planted_ids:
        row = issues[issues["sample_id"] == sid].iloc[0]
        assert row["suggested_label"] == log.loc[log["sample_id"] == sid, "pred_label"].iloc[0]
        assert row["text"] == log.loc[log["sample_id"] == sid, "text"].iloc[0]


@pytest.mark.parametrize("n", [0, 4])
def test_tiny_logs_do_not_crash(n):
    log = synthetic_log(n=max(n, 1)).iloc[:n]
    issues = label_issues(log)
    assert list(issues.columns) == ISSUE_COLUMNS and len(issues) <= n
