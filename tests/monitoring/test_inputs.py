"""What monitor reads: serve's logs (told by their format mark, not their name), predict tables, score folders."""

from __future__ import annotations

import pandas as pd
import pytest

from finsent.core.errors import FinsentError
from finsent.monitoring.inputs import read_inputs
from finsent.monitoring.predlog import PredictionLog

LABELS = ("negative", "neutral", "positive")


def prediction(label: str, p: float) -> dict:
    rest = (1 - p) / 2
    return {"label": label, "confidence": p, "probabilities": {x: p if x == label else rest for x in LABELS}}


def write_log(folder, texts, log_text: bool, version: str = "v1"):
    log = PredictionLog(folder, model_version=version, backend="onnx", labels=LABELS, log_text=log_text)
    log.start()
    log.record(texts, [prediction("positive", 0.9) for _ in texts], 2.0, "/predict")
    log.close()


def test_logs_with_and_without_text_keep_their_lengths(tmp_path):
    write_log(tmp_path / "a", ["Profit rose sharply ."] * 3, log_text=True)
    write_log(tmp_path / "b", ["Sales fell ."] * 2, log_text=False)
    data, counts = read_inputs([str(tmp_path / "a"), str(tmp_path / "b")], LABELS)
    assert data["text"].tolist() == ["Profit rose sharply ."] * 3 + [""] * 2
    assert data["text_length"].tolist() == [21.0] * 3 + [12.0] * 2  # the logged length, not that of ""
    assert counts[str(tmp_path / "b")]["model_versions"] == ["v1"] and counts[str(tmp_path / "b")]["backends"] == [
        "onnx"
    ]
    assert data["time"].notna().all() and data["truth"].isna().all()


def test_a_parquet_named_like_a_log_is_read_as_a_table(tmp_path):
    table = pd.DataFrame({"text": ["a b", "c"], "label": ["positive", "neutral"]})
    for x in LABELS:
        table[f"pred_prob_{x}"] = [0.2, 0.3] if x != "positive" else [0.6, 0.4]
    table.to_parquet(tmp_path / "predictions-2026.parquet")
    data, _ = read_inputs([str(tmp_path / "predictions-2026.parquet")], LABELS)
    assert data["truth"].tolist() == ["positive", "neutral"] and data["text_length"].tolist() == [3.0, 1.0]


@pytest.mark.parametrize(
    "time, message",
    [([1733200000, 1733203600], "holds numbers, not dates"), (["2026-12-01T10:00:00Z", "yesterday"], "row 2: time")],
)
def test_bad_times_are_one_line(tmp_path, time, message):
    table = pd.DataFrame({"time": time, **{f"prob_{x}": [0.2, 0.6] if x != "neutral" else [0.6, 0.2] for x in LABELS}})
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(FinsentError, match=message):
        read_inputs([str(tmp_path / "t.csv")], LABELS)


def test_an_empty_time_cell_is_missing(tmp_path):
    table = pd.DataFrame({"time": ["2026-12-01T10:00:00Z", ""], **{f"prob_{x}": [0.5, 0.25] for x in LABELS}})
    table.to_csv(tmp_path / "t.csv", index=False)
    data, _ = read_inputs([str(tmp_path / "t.csv")], LABELS)
    assert data["time"].isna().tolist() == [False, True]


def test_a_folder_without_parquet_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FinsentError, match="no prediction logs"):
        read_inputs([str(tmp_path)], LABELS)
