"""What `finsent monitor` reads: serve's prediction logs, and the outputs of `finsent predict` and `finsent score`.

Each becomes one frame with the predictions' calibrated probabilities (`prob_<label>`), and where the input has them a
`time`, the `text`, its `text_length` and the true label (`truth`: a `true_label` column, or `label` where the
predictions are `pred_`-prefixed because the input had its own `label`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finsent.core.errors import FinsentError
from finsent.data.tables import read_chunks
from finsent.monitoring.predlog import FORMAT as LOG_FORMAT
from finsent.monitoring.predlog import read_prediction_logs

LOG_KEY = b"finsent"  # the schema metadata key predlog writes its format under

HINT = "give finsent predict or score outputs, or the files of serve --log_predictions"


def _is_log_file(path: Path) -> bool:
    """A file serve --log_predictions wrote: Parquet whose schema carries the prediction-log format mark."""
    if path.suffix != ".parquet":
        return False
    import pyarrow.parquet as pq

    try:
        return (pq.read_schema(path).metadata or {}).get(LOG_KEY) == LOG_FORMAT.encode()
    except Exception:  # noqa: BLE001 - not readable as Parquet: read as a table, which names the problem
        return False


def _is_log(path: Path) -> bool:
    """serve's prediction log: such a file, or a folder holding them."""
    if path.is_dir():
        return any(_is_log_file(f) for f in path.glob("predictions-*.parquet"))
    return _is_log_file(path)


def _read_folder(path: Path) -> pd.DataFrame:
    """A `finsent score` output folder: its Parquet files (one per input shard) in name order."""
    files = sorted(path.glob("*.parquet"))
    if not files:
        raise FinsentError(f"{path}: a folder with no prediction logs (predictions-*.parquet) or Parquet files; {HINT}")
    return pd.concat([_read_table(f) for f in files], ignore_index=True)


def _read_table(path: Path) -> pd.DataFrame:
    import pyarrow as pa

    return pa.concat_tables(list(read_chunks(path, hint=HINT))).to_pandas()


def _prefix(frame: pd.DataFrame, labels: tuple[str, ...], name: str) -> str:
    for prefix in ("pred_", ""):
        if all(f"{prefix}prob_{label}" in frame.columns for label in labels):
            return prefix
    wanted = ", ".join(f"prob_{label}" for label in labels)
    raise FinsentError(f"{name}: no prediction columns ({wanted}); {HINT}")


def _numbers(frame: pd.DataFrame, column: str, name: str) -> np.ndarray:
    values = pd.to_numeric(frame[column].replace("", np.nan), errors="coerce")
    bad = values.isna() & frame[column].notna() & frame[column].astype(str).ne("")
    if bad.any():
        raise FinsentError(f"{name}: row {int(bad.to_numpy().argmax()) + 1}: {column} is not a number")
    return values.to_numpy(dtype=np.float64)


def _truth(frame: pd.DataFrame, prefix: str, labels: tuple[str, ...], name: str) -> pd.Series | None:
    column = "true_label" if "true_label" in frame.columns else ("label" if prefix and "label" in frame else None)
    if column is None:
        return None
    truth = frame[column].astype("string").str.strip().replace("", pd.NA)
    bad = truth.notna() & ~truth.isin(labels)
    if bad.any():
        row = int(bad.to_numpy().argmax()) + 1
        raise FinsentError(
            f"{name}: row {row}: {column} {truth[bad].iloc[0]!r} is not one of {', '.join(labels)}; fix or drop it"
        )
    return truth


def _time(frame: pd.DataFrame, column: str, name: str) -> pd.Series | None:
    if column not in frame.columns:
        return None
    values = frame[column]
    numeric = values.astype("string").str.fullmatch(r"\s*-?\d+(\.\d*)?\s*")
    if pd.api.types.is_numeric_dtype(values) or (numeric.notna().any() and numeric.fillna(True).all()):
        raise FinsentError(
            f"{name}: {column} holds numbers, not dates or times; give ISO times (2026-12-03T10:00:00Z) or name "
            "another column with --time_column"
        )
    values = values.replace("", None) if values.dtype == object or pd.api.types.is_string_dtype(values) else values
    times = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    bad = times.isna() & values.notna()
    if bad.any():
        row = int(bad.to_numpy().argmax()) + 1
        raise FinsentError(f"{name}: row {row}: {column} {values[bad].iloc[0]!r} is not a date or time")
    return times


def normalise(
    frame: pd.DataFrame, labels: tuple[str, ...], name: str, text_column: str = "text", time_column: str = "time"
) -> pd.DataFrame:
    """One input's rows as prob_<label>, truth, text, text_length and time (scored rows only)."""
    prefix = _prefix(frame, labels, name)
    probs = np.column_stack([_numbers(frame, f"{prefix}prob_{label}", name) for label in labels])
    out = pd.DataFrame(probs, columns=[f"prob_{label}" for label in labels])
    truth = _truth(frame, prefix, labels, name)
    out["truth"] = truth.to_numpy(dtype=object) if truth is not None else None
    lengths = _numbers(frame, "text_length", name) if "text_length" in frame.columns else np.full(len(frame), np.nan)
    if text_column in frame.columns:
        text = frame[text_column].astype("string")
        out["text"] = text.fillna("").to_numpy(dtype=object)
        lengths = np.where(text.notna().to_numpy(), text.str.len().fillna(0).to_numpy(dtype=float), lengths)
    out["text_length"] = lengths  # NaN where neither the text nor its length is known
    times = _time(frame, time_column, name)
    if times is not None:
        out["time"] = times.to_numpy()
    out["input"] = name
    return out[~np.isnan(probs).any(axis=1)].reset_index(drop=True)  # empty texts: not scored


def read_inputs(
    paths: list[str], labels: tuple[str, ...], text_column: str = "text", time_column: str = "time"
) -> tuple[pd.DataFrame, dict]:
    """Every input's scored rows, in the order given (each log folder in time order), and how many rows each gave."""
    frames, counts = [], {}
    for raw in paths:
        path = Path(raw)
        if not path.exists() and "://" not in raw:
            raise FinsentError(f"{raw}: no such file or folder (--predictions); {HINT}")
        if _is_log(path):
            frame = read_prediction_logs([path])
        else:
            frame = _read_folder(path) if path.is_dir() else _read_table(path)
        part = normalise(frame, labels, raw, text_column, time_column)
        counts[raw] = {"rows": len(frame), "scored": len(part)}
        for column, key in (("model_version", "model_versions"), ("backend", "backends")):
            if column in frame.columns:
                counts[raw][key] = sorted(frame[column].dropna().astype(str).unique().tolist())
        frames.append(part)
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if "text" in data.columns:  # inputs without texts beside inputs with them
        data["text"] = data["text"].fillna("")
    if data.empty:
        raise FinsentError(f"{', '.join(paths)}: no scored rows to monitor")
    return data, counts
