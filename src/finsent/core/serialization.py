"""NumPy-safe, strictly valid JSON, atomic file writes and CSV cells a spreadsheet will not run as formulas."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

# Leading characters that make Excel, LibreOffice or Google Sheets read a cell as a formula (OWASP "CSV injection").
PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def to_jsonable(obj: Any) -> Any:
    """Convert NumPy scalars/arrays, NaN/inf (to None), paths, datetimes, dataclasses and sets to JSON types."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(obj, key=str)]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "item") and callable(obj.item):  # torch scalars and 0-d tensors
        return to_jsonable(obj.item())
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False)


def _atomic_write(path: Path, write, binary: bool = False) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # mode 0o666 less the umask, as open() gives (mkstemp's 0o600 would hide artifacts from the dashboard server's user)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write strictly valid JSON atomically (temp file + rename)."""
    text = dumps(obj) + "\n"
    _atomic_write(path, lambda f: f.write(text))


def write_text(path: Path, text: str) -> None:
    """Write a text file (UTF-8) atomically."""
    _atomic_write(path, lambda f: f.write(text))


def write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file atomically."""
    _atomic_write(path, lambda f: f.write(data), binary=True)


def write_stream(path: Path, write: Callable[[TextIO], None]) -> None:
    """Stream a text file atomically: write(f) fills a temp file beside path, renamed over it when done."""
    _atomic_write(path, write)


def neutralise_cell(value: Any) -> Any:
    """A string a spreadsheet would read as a formula (one starting with =, +, -, @, tab or carriage return), with a
    single quote in front so that it shows as text; every other value, plain numbers such as -0.5 included, as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def write_csv(path: Path, rows: Iterable[dict], fieldnames: list[str], neutralise: bool = False) -> None:
    """Write dict rows as CSV atomically; values pass through to_jsonable first, and with neutralise every string
    cell through neutralise_cell."""
    cell = neutralise_cell if neutralise else (lambda value: value)

    def write(f):
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: cell(to_jsonable(row[k])) for k in fieldnames})

    _atomic_write(path, write)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
