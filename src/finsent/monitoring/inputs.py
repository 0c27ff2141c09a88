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
from finsent.monitoring.predlog import read_prediction_logs

HINT = "give finsent predict or score outputs, or the files of serve --log_predictions"


def _is_log(path: Path) -> bool:
    return path.is_dir() or (path.name.startswith("predictions-") and path.suffix == ".parquet")


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
    times = pd.to_datetime(frame[column], utc=True, errors="coerce", format="mixed")
    bad = times.isna() & frame[column].notna()
    if bad.any():
        row = int(bad.to_numpy().argmax()) + 1
        raise FinsentError(f"{name}: row {row}: {column} {frame[column][bad].iloc[0]!r} is not a date or time")
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
    if text_column in frame.columns:
        out["text"] = frame[text_column].astype("string").fillna("").to_numpy(dtype=object)
        out["text_length"] = out["text"].str.len().astype(float)
    elif "text_length" in frame.columns:
        out["text_length"] = _numbers(frame, "text_length", name)
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
        frame = read_prediction_logs([path]) if _is_log(path) else _read_table(path)
        part = normalise(frame, labels, raw, text_column, time_column)
        counts[raw] = {"rows": len(frame), "scored": len(part)}
        frames.append(part)
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if data.empty:
        raise FinsentError(f"{', '.join(paths)}: no scored rows to monitor")
    return data, counts
