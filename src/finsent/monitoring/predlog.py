"""Prediction logs: what the server answered, one row per scored text, in rolling Parquet files.

The one owner of the log's file format (`COLUMNS`, `columns()`, the file names) and of its reader. The server only
enqueues (texts, predictions, latency, route) per request; a background thread builds the rows and writes them, so a
full disk or a slow one costs the requests nothing: rows that cannot be queued or written are dropped and counted.
"""

from __future__ import annotations

import itertools
import os
import queue
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.logs import warn
from finsent.core.text import sentence_hash
from finsent.data.labels import LABELS

PREFIX = "predictions-"
SUFFIX = ".parquet"
FORMAT = "finsent-prediction-log/1"  # in each file's schema metadata, under b"finsent"
REQUIRED = ("time", "model_version", "backend", "route", "label", "confidence")
_STOP = object()
CLOSE_TIMEOUT_S = 60.0
_SEQ = itertools.count(1)  # one sequence per process, so that two logs in one folder never share a name


def prob_column(label: str) -> str:
    return f"prob_{label}"


def columns(labels: Sequence[str] = LABELS, log_text: bool = False) -> tuple[str, ...]:
    """The log's columns in order: one prob_<label> per label of the run, in its label order; text only with log_text."""
    return (
        "time",
        "model_version",
        "backend",
        "route",
        "label",
        *(prob_column(label) for label in labels),
        "confidence",
        "margin",
        "answered_by",
        "latency_ms",
        "text_length",
        "sentence_hash",
        *(("text",) if log_text else ()),
    )


COLUMNS = columns()


def schema(labels: Sequence[str] = LABELS, log_text: bool = False):
    """The pyarrow schema of a log file (time in UTC microseconds)."""
    import pyarrow as pa

    kinds = {
        "time": pa.timestamp("us", tz="UTC"),
        "latency_ms": pa.float64(),
        "text_length": pa.int32(),
        "confidence": pa.float64(),
        "margin": pa.float64(),
        **{prob_column(label): pa.float64() for label in labels},
    }
    fields = [pa.field(name, kinds.get(name, pa.string())) for name in columns(labels, log_text)]
    return pa.schema(fields, metadata={"finsent": FORMAT})


def _margin(probabilities: dict[str, float]) -> float:
    top = sorted(probabilities.values(), reverse=True)
    return float(top[0] - top[1]) if len(top) > 1 else float(top[0]) if top else 0.0


class _Rows:
    """Rows waiting for the next file, as one list per column."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.data: dict[str, list] = {name: [] for name in self.names}
        self.first: float | None = None  # monotonic time the first row arrived
        self.first_time: float | None = None  # its wall-clock time (the file's name)

    def __len__(self) -> int:
        return len(self.data["time"])

    def extend(self, values: dict[str, list], start: int, stop: int, when: float) -> None:
        if self.first is None:
            self.first, self.first_time = time.monotonic(), when
        for name in self.names:
            self.data[name].extend(values[name][start:stop])


class PredictionLog:
    """Rolling Parquet files of the predictions a server answered, written by a daemon thread.

    record() only enqueues and never raises; a file is written (atomically) when it holds rows_per_file rows or its
    first row is seconds_per_file old, and close() writes what is left. Rows that do not fit the queue
    (max_queue_rows) or cannot be written (a full disk, no permission: one warning) are dropped and counted in dropped.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        model_version: str,
        backend: str,
        labels: Sequence[str],
        log_text: bool = False,
        rows_per_file: int = 50_000,
        seconds_per_file: float = 300.0,
        max_queue_rows: int = 200_000,
    ):
        if rows_per_file < 1 or seconds_per_file <= 0 or max_queue_rows < 1:
            raise ValueError("rows_per_file and max_queue_rows must be at least 1, seconds_per_file above 0")
        self.directory = Path(directory)
        self.model_version = str(model_version)
        self.backend = str(backend)
        self.labels = tuple(labels)
        self.log_text = log_text
        self.rows_per_file = rows_per_file
        self.seconds_per_file = seconds_per_file
        self.max_queue_rows = max_queue_rows
        self.columns = columns(self.labels, log_text)
        self.files_written = 0
        self.rows_written = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0
        self._dropped = 0
        self._warned = False
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        """Rows dropped so far: the queue was full, or their file could not be written."""
        return self._dropped

    def start(self) -> None:
        """Start the writer thread (once)."""
        if self._thread is None and not self._closed:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # said now, at start; the writer tries again with each file
                self._failed(0, f"{type(e).__name__}: {e}")
            self._thread = threading.Thread(target=self._run, name="finsent-prediction-log", daemon=True)
            self._thread.start()

    def record(self, texts: Sequence[str], predictions: Sequence[dict], latency_ms: float, route: str) -> None:
        """Queue one request's predictions; drops them (counted) when the queue is full or the log is closed."""
        n = len(predictions) if hasattr(predictions, "__len__") else 1
        try:
            item = (time.time(), texts, predictions, float(latency_ms), route)
            with self._lock:
                if self._closed or self._queued + n > self.max_queue_rows:
                    self._dropped += n
                    return
                self._queued += n
                self._queue.put(item)  # inside the lock, so that nothing lands behind close()'s stop mark
        except Exception:  # noqa: BLE001 - logging must never fail a request
            with self._lock:
                self._dropped += n

    def close(self) -> None:
        """Write every queued row and stop the thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        if self._thread is None:
            self._run()  # never started: write what was queued here
            return
        self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread.is_alive():  # a hung file system must not hold the server's shutdown forever
            warn(
                f"{self.directory}: the prediction log was still writing after {CLOSE_TIMEOUT_S:.0f} s at shutdown; "
                f"its last rows ({self._queued} queued) may be lost: check the folder's file system"
            )

    def __enter__(self) -> PredictionLog:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        rows = _Rows(self.columns)
        while True:
            timeout = None if rows.first is None else max(0.0, rows.first + self.seconds_per_file - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._flush(rows)
                return
            if item is not None:
                rows = self._add(rows, item)
            if rows.first is not None and time.monotonic() - rows.first >= self.seconds_per_file:
                rows = self._flush(rows)

    def _add(self, rows: _Rows, item: tuple) -> _Rows:
        """Append one request's rows, writing a file each time rows_per_file is reached."""
        when, texts, predictions, latency_ms, route = item
        with self._lock:
            self._queued -= len(predictions)
        try:
            values = self._values(when, texts, predictions, latency_ms, route)
        except Exception as e:  # noqa: BLE001 - a malformed record must not stop the thread
            self._failed(len(predictions), f"a record it could not read: {type(e).__name__}: {e}")
            return rows
        start, n = 0, len(predictions)
        while start < n:
            stop = min(n, start + self.rows_per_file - len(rows))
            rows.extend(values, start, stop, when)
            start = stop
            if len(rows) >= self.rows_per_file:
                rows = self._flush(rows)
        return rows

    def _values(self, when: float, texts, predictions, latency_ms: float, route: str) -> dict[str, list]:
        """One request's rows as column lists (built here, on the writer thread, not in the request)."""
        n = len(predictions)
        if len(texts) != n:
            raise ValueError(f"{len(texts)} texts but {n} predictions")
        stamp = int(when * 1_000_000)
        values = {
            "time": [stamp] * n,
            "model_version": [self.model_version] * n,
            "backend": [self.backend] * n,
            "route": [route] * n,
            "label": [p["label"] for p in predictions],
            "confidence": [float(p["confidence"]) for p in predictions],
            "margin": [_margin(p["probabilities"]) for p in predictions],
            "answered_by": [p.get("answered_by") for p in predictions],
            "latency_ms": [latency_ms] * n,
            "text_length": [len(t) for t in texts],
            "sentence_hash": [sentence_hash(t) for t in texts],
        }
        for label in self.labels:
            values[prob_column(label)] = [float(p["probabilities"][label]) for p in predictions]
        if self.log_text:
            values["text"] = list(texts)
        return values

    def _flush(self, rows: _Rows) -> _Rows:
        """Write the rows as one file (if any); always returns an empty batch."""
        if len(rows):
            try:
                self._write(rows)
                self._warned = False
            except Exception as e:  # noqa: BLE001 - OSError above all (disk full, permissions); keep serving
                self._failed(len(rows), f"{type(e).__name__}: {e}")
        return _Rows(self.columns)

    def _failed(self, n: int, reason: str) -> None:
        with self._lock:
            self._dropped += n
        if not self._warned:
            self._warned = True
            lost = f"{n} rows dropped; " if n else ""
            warn(
                f"{self.directory}: cannot write the prediction log ({reason}); {lost}serving goes on without it: free "
                "disk space or fix the folder's permissions (--log_predictions DIR), each next file tries again"
            )

    def _write(self, rows: _Rows) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pydict(rows.data, schema=schema(self.labels, self.log_text))
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(rows.first_time, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = self.directory / f"{PREFIX}{stamp}-{os.getpid()}-{next(_SEQ):06d}{SUFFIX}"
        tmp = self.directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.files_written += 1
        self.rows_written += len(rows)


def log_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The log files a list of files and folders names (a folder: its predictions-*.parquet, by name)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.glob(f"{PREFIX}*{SUFFIX}"))
            if not found:
                raise FinsentError(f"{path}: no prediction logs ({PREFIX}*{SUFFIX}) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FinsentError(f"{path}: no such prediction log file or folder")
    if not files:
        raise FinsentError("no prediction logs given")
    return files


def _read_one(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise FinsentError(f"{path}: not a prediction log (not readable as Parquet: {type(e).__name__})") from None
    missing = [name for name in REQUIRED if name not in table.column_names]
    if missing:
        raise FinsentError(f"{path}: not a prediction log (no column {', '.join(missing)})")
    return table.to_pandas()


def read_prediction_logs(paths: str | Path | Iterable[str | Path]):
    """One or more log files or folders as one pandas DataFrame sorted by time; a path that is not a log is a one-line
    FinsentError naming it."""
    import pandas as pd

    frames = [_read_one(path) for path in log_files(paths)]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return frame.sort_values("time", kind="stable", ignore_index=True)
