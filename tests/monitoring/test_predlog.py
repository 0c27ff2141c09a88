"""The prediction log: Parquet files of the right columns, rolled by rows and by time, flushed on close, a writer
that survives an unwritable folder with one warning, and the reader that merges files in time order."""

import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finsent.core.errors import FinsentError
from finsent.core.text import sentence_hash
from finsent.data.labels import LABELS
from finsent.inference.predictor import Scores
from finsent.monitoring.predlog import COLUMNS, PredictionLog, columns, read_prediction_logs

NAME = re.compile(r"^predictions-\d{8}T\d{6}Z-\d+-\d{6}\.parquet$")
TEXTS = ["Operating profit rose to EUR 13.1 mn .", "Sales fell sharply .", "The company is based in Helsinki ."]


def predictions(n: int, seed: int = 0, answered_by: list[str] | None = None) -> list[dict]:
    """n predictions as the Predictor returns them (calibrated probabilities, records())."""
    logits = np.random.default_rng(seed).normal(size=(n, len(LABELS))) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return Scores(probs, np.zeros(n, dtype=bool), LABELS, answered_by).records()


def new_log(directory, **options) -> PredictionLog:
    return PredictionLog(directory, model_version="v3", backend="onnx", labels=LABELS, **options)


def files(directory) -> list:
    return sorted(directory.glob("predictions-*.parquet"))


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the writer thread did not get there in time")
        time.sleep(0.01)


def test_rows_land_with_the_columns_and_no_text(tmp_path):
    preds = predictions(3, answered_by=["layer 2", "final", "layer 4"])
    before = time.time()
    with new_log(tmp_path / "logs") as log:
        log.record(TEXTS, preds, 12.5, "/predict")
    assert log.dropped == 0 and log.rows_written == 3
    [path] = files(tmp_path / "logs")
    assert NAME.match(path.name), path.name
    assert [p.name for p in (tmp_path / "logs").iterdir()] == [path.name]  # no temp file left behind
    table = pq.read_table(path)
    assert tuple(table.column_names) == COLUMNS == columns(LABELS)
    assert "text" not in table.column_names
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    rows = table.to_pylist()
    for row, p, text in zip(rows, preds, TEXTS):
        assert row["time"].timestamp() == pytest.approx(before, abs=5)
        assert (row["model_version"], row["backend"], row["route"]) == ("v3", "onnx", "/predict")
        assert row["label"] == p["label"] and row["confidence"] == p["confidence"]
        assert [row[f"prob_{label}"] for label in LABELS] == [p["probabilities"][label] for label in LABELS]
        top = sorted(p["probabilities"].values(), reverse=True)
        assert row["margin"] == pytest.approx(top[0] - top[1])
        assert row["answered_by"] == p["answered_by"] and row["latency_ms"] == 12.5
        assert row["text_length"] == len(text) and row["sentence_hash"] == sentence_hash(text)


def test_log_text_stores_the_text_and_answered_by_is_null_without_exits(tmp_path):
    with new_log(tmp_path, log_text=True) as log:
        log.record(TEXTS, predictions(3), 3.0, "/invocations")
    table = pq.read_table(files(tmp_path)[0])
    assert table.column_names == [*COLUMNS, "text"]
    assert table.column("text").to_pylist() == TEXTS
    assert table.column("answered_by").null_count == 3


def test_files_roll_by_rows_and_close_writes_the_rest(tmp_path):
    log = new_log(tmp_path, rows_per_file=3)
    log.start()
    for i, n in enumerate([2, 2, 2, 1]):
        log.record(TEXTS[:n], predictions(n, seed=i), 1.0, "/predict")
    wait_for(lambda: len(files(tmp_path)) == 2)
    log.close()
    log.close()  # idempotent
    assert [pq.read_metadata(p).num_rows for p in files(tmp_path)] == [3, 3, 1]
    log.record(TEXTS[:1], predictions(1), 1.0, "/predict")  # after close: dropped, counted, no error
    assert log.dropped == 1 and len(files(tmp_path)) == 3


def test_files_roll_by_time(tmp_path):
    with new_log(tmp_path, seconds_per_file=0.2) as log:
        log.record(TEXTS[:1], predictions(1), 1.0, "/predict")
        wait_for(lambda: len(files(tmp_path)) == 1)  # written while the log is still open
        log.record(TEXTS[:2], predictions(2), 1.0, "/predict")
    assert [pq.read_metadata(p).num_rows for p in files(tmp_path)] == [1, 2]


def test_a_full_queue_drops_and_counts(tmp_path):
    log = new_log(tmp_path, max_queue_rows=3)  # not started: nothing drains the queue until close()
    log.record(TEXTS[:2], predictions(2), 1.0, "/predict")
    log.record(TEXTS[:2], predictions(2), 1.0, "/predict")
    log.record(TEXTS[:1], predictions(1), 1.0, "/predict")
    assert log.dropped == 2
    log.close()
    assert [pq.read_metadata(p).num_rows for p in files(tmp_path)] == [3]


def test_an_unwritable_folder_warns_once_and_serving_goes_on(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the log's parent folder should be")
    directory = blocker / "logs"
    log = new_log(directory, rows_per_file=2)
    log.start()
    for i in range(3):
        log.record(TEXTS[:2], predictions(2, seed=i), 1.0, "/predict")  # never raises
    wait_for(lambda: log.dropped == 6)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("finsent: warning: ") and str(directory) in warnings[0]
    assert "--log_predictions" in warnings[0]
    blocker.unlink()  # the disk is fixed: the next file is written
    log.record(TEXTS[:2], predictions(2), 1.0, "/predict")
    log.close()
    assert log.dropped == 6 and [pq.read_metadata(p).num_rows for p in files(directory)] == [2]
    assert capsys.readouterr().err == ""


def test_a_malformed_record_does_not_stop_the_writer(tmp_path, capsys):
    with new_log(tmp_path) as log:
        log.record(TEXTS[:1], [{"no label": 1}], 1.0, "/predict")
        log.record(TEXTS[:2], predictions(2), 1.0, "/predict")
    assert log.dropped == 1 and [pq.read_metadata(p).num_rows for p in files(tmp_path)] == [2]
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_reader_merges_files_in_time_order(tmp_path):
    first, second = new_log(tmp_path), new_log(tmp_path, log_text=True)
    first.record(["a ."], predictions(1, seed=1), 1.0, "/predict")
    time.sleep(0.01)
    second.record(["b ."], predictions(1, seed=2), 2.0, "/invocations")
    time.sleep(0.01)
    first.record(["c ."], predictions(1, seed=3), 3.0, "/predict")
    second.close()  # written first, though its row lies between the other file's two
    first.close()
    assert len(files(tmp_path)) == 2
    for source in (tmp_path, list(reversed(files(tmp_path)))):
        frame = read_prediction_logs(source)
        assert frame["latency_ms"].tolist() == [1.0, 2.0, 3.0]
        assert frame["time"].is_monotonic_increasing and str(frame["time"].dt.tz) == "UTC"
        assert frame["text_length"].tolist() == [3, 3, 3]
    one = read_prediction_logs(files(tmp_path)[0])
    assert len(one) in (1, 2)


def test_reader_rejects_what_is_not_a_log_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "scores.csv").write_text("text,label\nSales fell .,negative\n")
    pq.write_table(pa.table({"text": ["Sales fell ."]}), tmp_path / "other.parquet")
    for path, message in [
        (tmp_path / "missing", "no such prediction log"),
        (tmp_path / "empty", "no prediction logs"),
        (tmp_path / "scores.csv", "not a prediction log"),
        (tmp_path / "other.parquet", "not a prediction log"),
    ]:
        with pytest.raises(FinsentError, match=message) as e:
            read_prediction_logs(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
