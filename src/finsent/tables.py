"""The one reader of user tables: CSV (with or without a UTF-8 BOM), TSV, JSON, JSON Lines, Parquet and TXT.

Local paths are opened as files, URLs (s3://, http://, memory://, ...) through fsspec; either is streamed as rows,
each carrying where it came from (`file:line`) for precise errors; `read_rows` reads a whole table for training."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from finsent.errors import FinsentError

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}
TABLE_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")  # formats with named columns (TXT has only text)
DELIMITERS = {"csv": ",", "tsv": "\t"}
PARQUET_BATCH_ROWS = 2048


@dataclass
class Row:
    """One record: its fields in input order and where it came from (`file:line`, or `file:row N` for Parquet)."""

    fields: dict
    where: str


@dataclass
class Table:
    """An open table: its columns where known up front, a lazy stream of rows, its size and how far in we are."""

    name: str
    format: str
    columns: list[str] | None
    rows: Iterator[Row]
    size: int | None = None
    position: Callable[[], int] | None = None
    close: Callable[[], None] = lambda: None

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def table_format(path: str | Path, default: str | None = None) -> str | None:
    """The format a file name says (by its suffix), or `default`."""
    return FORMATS.get(Path(str(path).split("?")[0]).suffix.lower(), default)


def txt_rows(lines: Iterable[str], name: str) -> Iterator[Row]:
    """One sentence a line (field `text`); blank lines are skipped."""
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if line.strip():
            yield Row({"text": line}, f"{name}:{lineno}")


def jsonl_rows(lines: Iterable[str], name: str) -> Iterator[Row]:
    """One JSON object a line; blank lines are skipped."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise FinsentError(f"{where}: invalid JSON ({e.msg}); expected one object per line") from None
        except RecursionError:
            raise FinsentError(f"{where}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise FinsentError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        yield Row(obj, where)


def json_rows(f: io.TextIOBase, name: str) -> Iterator[Row]:
    """A .json file: a list of objects (read whole), or JSON Lines saved under .json."""
    text = f.read()
    if not text.lstrip().startswith("["):
        yield from jsonl_rows(io.StringIO(text), name)
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise FinsentError(f"{name}:{e.lineno}: invalid JSON ({e.msg}); expected a list of objects") from None
    except RecursionError:
        raise FinsentError(f"{name}: JSON nested too deeply") from None
    for i, obj in enumerate(items, start=1):
        where = f"{name}:item {i}"
        if not isinstance(obj, dict):
            raise FinsentError(
                f"{where}: expected a JSON object, got {type(obj).__name__}; a .json file holds a list of objects (or use JSON Lines, .jsonl)"
            )
        yield Row(obj, where)


def csv_rows(reader: csv.DictReader, name: str) -> Iterator[Row]:
    """Rows after the header; a row with more cells than the header is an error, a short one is padded with None."""
    try:
        for rec in reader:
            where = f"{name}:{reader.line_num}"
            if None in rec:
                raise FinsentError(
                    f"{where}: {len(rec[None])} more cells than the header's {len(reader.fieldnames)} columns; quote fields that contain commas"
                )
            yield Row(rec, where)
    except csv.Error as e:
        raise FinsentError(f"{name}:{reader.line_num}: not valid CSV ({e})") from None


def _parquet_rows(pf, name: str) -> Iterator[Row]:
    n = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for rec in batch.to_pylist():
            n += 1
            yield Row(rec, f"{name}:row {n}")


def decoded(rows: Iterator[Row], name: str) -> Iterator[Row]:
    try:
        yield from rows
    except UnicodeDecodeError as e:
        raise FinsentError(
            f"{name}: not UTF-8 text (byte {e.start} of a read block: {e.reason}); save the file as UTF-8"
        ) from None


def _check_columns(name: str, columns: list[str], required: Sequence[str], hint: str) -> None:
    for col in required:
        if col not in columns:
            raise FinsentError(f"{name}: no column {col!r} in the header {columns}{'; ' + hint if hint else ''}")


def _open_binary(name: str, missing: str):
    """A binary file object and its size: a local path with open() as before, a URL through fsspec."""
    if "://" not in name:
        if not Path(name).is_file():
            raise FinsentError(f"{name}: {missing or 'no such file'}")
        try:
            return open(name, "rb"), Path(name).stat().st_size
        except OSError as e:
            raise FinsentError(f"{name}: cannot read ({e.strerror}); check the file's permissions") from None
    import fsspec

    try:
        opener = fsspec.open(name, "rb")
        if not opener.fs.isfile(opener.path):
            raise FinsentError(f"{name}: {missing or 'no such file'}")
        return opener.open(), opener.fs.size(opener.path)
    except (ValueError, ImportError, OSError) as e:
        raise FinsentError(f"{name}: cannot open ({e})") from None


def open_table(
    path: str | Path,
    required: Sequence[str] = (),
    hint: str = "",
    fmt: str | None = None,
    missing: str = "",
) -> Table:
    """Open a table for streaming (only a CSV header or Parquet schema is read now).

    `required` columns are checked against the header where the format has one (JSON records are the caller's to
    check); `hint` (e.g. "set --text_column") ends that message; `missing` replaces "no such file" for a missing one.
    The format comes from the suffix (unknown: TXT) unless `fmt` names it."""
    name = str(path)
    fmt = fmt or table_format(name, "txt")
    raw, size = _open_binary(name, missing)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(raw)
        except (pa.ArrowInvalid, OSError) as e:
            raw.close()
            raise FinsentError(f"{name}: not a readable Parquet file ({e})") from None
        columns = list(pf.schema_arrow.names)
        try:
            _check_columns(name, columns, required, hint)
        except FinsentError:
            raw.close()
            raise
        return Table(name, fmt, columns, _parquet_rows(pf, name), size, None, raw.close)
    f = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="" if fmt in DELIMITERS else None)
    columns = None
    try:
        if fmt in DELIMITERS:
            reader = csv.DictReader(f, delimiter=DELIMITERS[fmt])
            try:
                columns = list(reader.fieldnames or [])
            except UnicodeDecodeError:
                raise FinsentError(f"{name}: not UTF-8 text; save the file as UTF-8") from None
            if not columns:
                raise FinsentError(f"{name}: empty file; expected a header line with the column names")
            _check_columns(name, columns, required, hint)
            rows = csv_rows(reader, name)
        elif fmt == "jsonl":
            rows = jsonl_rows(f, name)
        elif fmt == "json":
            rows = json_rows(f, name)
        else:
            rows = txt_rows(f, name)
            columns = ["text"]
    except BaseException:
        f.close()
        raise
    return Table(name, fmt, columns, decoded(rows, name), size, raw.tell, f.close)


def read_rows(path: str | Path, required: Sequence[str] = (), hint: str = "", fmt: str | None = None) -> list[Row]:
    """Every row of a table (for training and evaluation, which need the whole of it)."""
    with open_table(path, required, hint, fmt) as table:
        return list(table.rows)
