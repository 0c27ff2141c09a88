"""The one reader of user tables: CSV (with or without a UTF-8 BOM), TSV, JSON, JSON Lines, Parquet and TXT.

Local paths are opened as files, URLs (s3://, http://, memory://, ...) through fsspec, either one plain or compressed
(.gz, .bz2, .xz, .zst); it is streamed as rows, each carrying where it came from (`file:line`) for precise errors
(`open_table`), read whole for training (`read_rows`), or read as pyarrow tables of a fixed number of rows for
columnar work such as `finsent score` (`read_chunks`)."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import itertools
import json
import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finsent.core.errors import FinsentError

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
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
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
    parquet: Any = None  # a Parquet table's pyarrow ParquetFile, read by columns where the caller wants them

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _split_compression(path: str | Path) -> tuple[str, str | None]:
    """The file name without a compression suffix, and the compression it names (or None)."""
    name = str(path).split("?")[0]
    suffix = Path(name).suffix.lower()
    return (name[: -len(suffix)], COMPRESSIONS[suffix]) if suffix in COMPRESSIONS else (name, None)


def table_format(path: str | Path, default: str | None = None) -> str | None:
    """The format a file name says (by its suffix; a compression suffix is looked through), or `default`."""
    return FORMATS.get(Path(_split_compression(path)[0]).suffix.lower(), default)


def base_name(path: str | Path) -> str:
    """The file name without its compression and format suffixes (news/2024.csv.gz: news/2024)."""
    name = _split_compression(path)[0]
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix.lower() in FORMATS else name


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


def _parquet_batches(pf, name: str, batch_rows: int) -> Iterator:
    """A Parquet file's record batches (types as stored); a damaged page is a one-line error naming the file."""
    import pyarrow as pa

    try:
        yield from pf.iter_batches(batch_size=batch_rows)
    except (pa.ArrowException, OSError) as e:
        raise FinsentError(f"{name}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def _parquet_rows(pf, name: str) -> Iterator[Row]:
    n = 0
    for batch in _parquet_batches(pf, name, PARQUET_BATCH_ROWS):
        for rec in batch.to_pylist():
            n += 1
            yield Row(rec, f"{name}:row {n}")


@contextmanager
def _reading(name: str, compression: str | None = None) -> Iterator[None]:
    """Undecodable text (and, in a compressed file, damaged data) as a one-line error naming the file."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise FinsentError(
            f"{name}: not UTF-8 text (byte {e.start} of a read block: {e.reason}); save the file as UTF-8"
        ) from None
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        if compression is None:
            raise
        raise FinsentError(f"{name}: not a readable {compression} file ({e}); fix or replace the file") from None


def decoded(rows: Iterator[Row], name: str, compression: str | None = None) -> Iterator[Row]:
    """The rows, with undecodable text (and, in a compressed file, damaged data) as a one-line error."""
    with _reading(name, compression):
        yield from rows


def _check_columns(
    name: str, columns: list[str], required: Sequence[str], hint: str, where: str = "the header"
) -> None:
    for col in required:
        if col not in columns:
            raise FinsentError(f"{name}: no column {col!r} in {where} {columns}{'; ' + hint if hint else ''}")


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


def _decompressed(raw, compression: str):
    """A reader of the decompressed bytes: the standard library for gzip, bz2 and xz, pyarrow for zstd."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if compression == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    import pyarrow as pa

    return pa.CompressedInputStream(raw, "zstd")


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
    The format comes from the suffix (unknown: TXT) unless `fmt` names it; a compression suffix is looked through."""
    name = str(path)
    fmt = fmt or table_format(name, "txt")
    compression = _split_compression(name)[1]
    raw, size = _open_binary(name, missing)
    data = _decompressed(raw, compression) if compression else raw
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if compression:  # Parquet needs random access; it compresses its own pages, so such files are rare
                data = pa.BufferReader(data.read())
            pf = pq.ParquetFile(data)
        except (pa.ArrowInvalid, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            raw.close()
            kind = "Parquet" if isinstance(e, pa.ArrowInvalid) or not compression else compression
            raise FinsentError(f"{name}: not a readable {kind} file ({str(e).splitlines()[0]})") from None
        columns = list(pf.schema_arrow.names)
        try:
            _check_columns(name, columns, required, hint)
        except FinsentError:
            raw.close()
            raise
        return Table(name, fmt, columns, _parquet_rows(pf, name), size, None, raw.close, pf)
    f = io.TextIOWrapper(data, encoding="utf-8-sig", newline="" if fmt in DELIMITERS else None)
    columns = None
    try:
        if fmt in DELIMITERS:
            reader = csv.DictReader(f, delimiter=DELIMITERS[fmt])
            with _reading(name, compression):
                columns = list(reader.fieldnames or [])
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
        raw.close()
        raise

    def close() -> None:
        f.close()
        raw.close()

    return Table(name, fmt, columns, decoded(rows, name, compression), size, raw.tell, close)


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Lists of at most `size` items, read lazily."""
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def read_rows(path: str | Path, required: Sequence[str] = (), hint: str = "", fmt: str | None = None) -> list[Row]:
    """Every row of a table (for training and evaluation, which need the whole of it)."""
    with open_table(path, required, hint, fmt) as table:
        return list(table.rows)


def read_chunks(path: str | Path, required: Sequence[str] = (), hint: str = "", chunk_rows: int = 2048) -> Iterator:
    """A table as pyarrow Tables of `chunk_rows` rows (the last one shorter; at least one, maybe empty).

    Parquet keeps its types; CSV, TSV and TXT cells stay strings (CSV has no types: "007" is not 7, and an empty
    cell is ""); JSON records take the field names and types of the first chunk, and a later record that brings
    another field or type is an error. Rows are parsed by the same rules as `open_table`'s."""
    import pyarrow as pa

    with open_table(path, required, hint) as table:
        if table.parquet is not None:
            schema = table.parquet.schema_arrow
            batches = _parquet_batches(table.parquet, table.name, chunk_rows)
        elif table.columns is not None:
            schema = pa.schema([(c, pa.string()) for c in dict.fromkeys(table.columns)])
            batches = (
                pa.RecordBatch.from_pylist([r.fields for r in rows], schema) for rows in chunked(table.rows, chunk_rows)
            )
        else:
            schema, batches = _json_batches(table.name, table.rows, required, hint, chunk_rows)
        yield from _rechunk(batches, schema, chunk_rows)


def _json_batches(name: str, rows: Iterator[Row], required: Sequence[str], hint: str, chunk_rows: int):
    """The schema of JSON records (fields in order of appearance, types inferred from the first chunk) and batches."""
    import pyarrow as pa

    chunks = chunked(rows, chunk_rows)
    first = next(chunks, None)
    if first is None:
        raise FinsentError(f"{name}: empty file; expected JSON objects, one per record")
    fields = list(dict.fromkeys(k for r in first for k in r.fields))
    _check_columns(name, fields, required, hint, "the fields of the first records")
    schema = None

    def batch(chunk: list[Row]):
        columns = []
        for i, field in enumerate(fields):
            kind = None if schema is None else schema.field(i).type
            try:
                columns.append(pa.array([r.fields.get(field) for r in chunk], type=kind))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
                fits = "mixes types" if kind is None else f"does not fit the type {kind} of the first records"
                raise FinsentError(
                    f"{name}: field {field!r} {fits} in the records from {chunk[0].where} on "
                    f"({str(e).splitlines()[0]}); give the field one type"
                ) from None
        if schema is not None:
            for r in chunk:
                extra = r.fields.keys() - set(fields)
                if extra:
                    raise FinsentError(
                        f"{r.where}: field {sorted(extra)[0]!r} is not in the first records {fields}; "
                        "give every record the same fields"
                    )
        return pa.RecordBatch.from_arrays(columns, names=fields)

    head = batch(first)
    schema = head.schema
    return schema, itertools.chain([head], map(batch, chunks))


def _rechunk(batches: Iterable, schema, chunk_rows: int) -> Iterator:
    """Record batches regrouped as Tables of exactly `chunk_rows` rows (the last one shorter; at least one table)."""
    import pyarrow as pa

    pending: list = []
    rows = 0
    yielded = False
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        while rows >= chunk_rows:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, chunk_rows)
            yielded = True
            rest = table.slice(chunk_rows)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows or not yielded:
        yield pa.Table.from_batches(pending, schema)
