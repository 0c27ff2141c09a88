"""The run's training and validation sentences found again for novelty, from the data path training recorded."""

from __future__ import annotations

import csv

import pytest

from finsent.core.errors import FinsentError
from finsent.core.serialization import write_json
from finsent.core.text import sentence_hash
from finsent.monitoring.reference import _split_texts


def test_the_resolved_data_path_wins_over_a_relative_one(tmp_path):
    table = tmp_path / "data" / "news.csv"
    table.parent.mkdir()
    texts = [f"Sentence number {i} about profit ." for i in range(30)]
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((t, ["negative", "neutral", "positive"][i % 3]) for i, t in enumerate(texts))
    run = tmp_path / "run"
    run.mkdir()
    write_json(
        run / "sentences.json",
        {"train": [sentence_hash(t) for t in texts[:20]], "val": [sentence_hash(t) for t in texts[20:25]]},
    )
    results = {"config": {"data_path": ["../elsewhere/news.csv"]}, "data": {"path": str(table)}}
    train, val = _split_texts(run, results)  # the relative path (from where training ran) does not resolve here
    assert train == texts[:20] and val == texts[20:25]
    with pytest.raises(FinsentError, match="no such file"):
        _split_texts(run, {"config": {"data_path": ["../elsewhere/news.csv"]}, "data": {}})
