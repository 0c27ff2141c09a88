"""Batch prediction: sentences from arguments, stdin or a csv/jsonl/txt file, streamed in chunks to csv/jsonl."""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from finsent.errors import FinsentError
from finsent.inference import is_valid_unicode
from finsent.serialization import write_stream

CHUNK_SIZE = 2048
INPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass
class Row:
    """One input record: its fields in input order, the text to score (None if empty) and where it came from."""

    fields: dict
    text: str | None
    where: str


@dataclass
class Source:
    """An input: its columns where known up front, a lazy stream of rows, and how far into it we are."""

    name: str
    columns: list[str] | None
    rows: Iterator[Row]
    size: int | None = None
    position: Callable[[], int] | None = None
    close: Callable[[], None] = lambda: None


@dataclass
class Summary:
    rows: int = 0
    scored: int = 0
    empty: int = 0
    truncated: int = 0
    empty_where: list[str] = field(default_factory=list)


def input_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        raise FinsentError(
            f"{path}: a .json file is not read; use JSON Lines (.jsonl, one object per line), .csv or .txt"
        )
    return INPUT_FORMATS.get(suffix, "txt")


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FinsentError(f"--output {path}: expected a .csv or .jsonl file name")
    return fmt


def _clean(text: str | None) -> str | None:
    return text if text is not None and text.strip() else None


def iter_txt(lines: Iterable[str], name: str) -> Iterator[Row]:
    """One sentence a line; blank lines are skipped."""
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if line.strip():
            yield Row({"text": line}, line, f"{name}:{lineno}")


def iter_jsonl(lines: Iterable[str], name: str, text_column: str) -> Iterator[Row]:
    """One JSON object a line; the text field must be a string (null or empty: nothing to score)."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise FinsentError(f"{where}: invalid JSON ({e.msg}); expected one object per line") from None
        if not isinstance(obj, dict):
            raise FinsentError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if text_column not in obj:
            raise FinsentError(
                f"{where}: no field {text_column!r}; set --text_column to the field holding the sentence"
            )
        text = obj[text_column]
        if text is not None and not isinstance(text, str):
            raise FinsentError(f"{where}: field {text_column!r} must be a string, got {type(text).__name__}")
        if text is not None and not is_valid_unicode(text):
            raise FinsentError(
                f"{where}: field {text_column!r} is not valid Unicode (a lone surrogate escape); fix the text"
            )
        yield Row(obj, _clean(text), where)


def iter_csv(reader: csv.DictReader, name: str, text_column: str) -> Iterator[Row]:
    """CSV rows after the header; an empty text cell is kept as a row with nothing to score."""
    try:
        for rec in reader:
            where = f"{name}:{reader.line_num}"
            if None in rec:
                raise FinsentError(
                    f"{where}: {len(rec[None])} more cells than the header's {len(reader.fieldnames)} columns; quote fields that contain commas"
                )
            yield Row(rec, _clean(rec[text_column]), where)
    except csv.Error as e:
        raise FinsentError(f"{name}:{reader.line_num}: not valid CSV ({e})") from None


def _decoded(rows: Iterator[Row], name: str) -> Iterator[Row]:
    try:
        yield from rows
    except UnicodeDecodeError as e:
        raise FinsentError(
            f"{name}: not UTF-8 text (byte {e.start} of a read block: {e.reason}); save the file as UTF-8"
        ) from None


def open_file(path: str | Path, text_column: str = "text") -> Source:
    """Open a csv/jsonl/txt file for streaming (nothing is read but the CSV header)."""
    path = Path(path)
    fmt = input_format(path)
    if not path.is_file():
        raise FinsentError(f"{path}: no such input file; pass --input pointing at a .csv, .jsonl or .txt file")
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise FinsentError(f"{path}: cannot read ({e.strerror}); check the file's permissions") from None
    f = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="" if fmt == "csv" else None)
    columns = None
    try:
        if fmt == "csv":
            reader = csv.DictReader(f)
            try:
                columns = list(reader.fieldnames or [])
            except UnicodeDecodeError:
                raise FinsentError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
            if not columns:
                raise FinsentError(f"{path}: empty file; expected a header line with a {text_column!r} column")
            if text_column not in columns:
                raise FinsentError(f"{path}: no column {text_column!r} in the header {columns}; set --text_column")
            rows = iter_csv(reader, str(path), text_column)
        elif fmt == "jsonl":
            rows = iter_jsonl(f, str(path), text_column)
        else:
            rows = iter_txt(f, str(path))
            columns = ["text"]
    except BaseException:
        f.close()
        raise
    return Source(str(path), columns, _decoded(rows, str(path)), path.stat().st_size, raw.tell, f.close)


def open_stdin(stream: TextIO | None = None) -> Source:
    """Sentences on stdin, one a line, read as UTF-8."""
    stream = stream if stream is not None else sys.stdin
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream = io.TextIOWrapper(buffer, encoding="utf-8-sig")
    return Source("<stdin>", ["text"], _decoded(iter_txt(stream, "<stdin>"), "<stdin>"))


def open_args(texts: list[str]) -> Source:
    return Source("<arguments>", ["text"], iter_txt(texts, "argument"))


def output_columns(labels: Iterable[str], input_columns: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Prediction column names (prefixed `pred_` where the input already has such a column) and the full header."""
    names = ["label", "confidence", *[f"prob_{label}" for label in labels], "truncated"]
    taken = set(input_columns)
    prefix = "pred_" if taken & set(names) else ""
    mapping = {n: prefix + n for n in names}
    return mapping, [*input_columns, *mapping.values()]


def chunked(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    """Lists of at most `size` rows, read lazily."""
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


class _Writer:
    """Rows to an open text stream as CSV (fixed header) or JSON Lines."""

    def __init__(self, f: TextIO, fmt: str, header: list[str]):
        self.f, self.fmt = f, fmt
        if fmt == "csv":
            self.csv = csv.DictWriter(f, fieldnames=header, extrasaction="ignore", restval="")
            self.csv.writeheader()

    def write(self, rows: list[dict]) -> None:
        if self.fmt == "csv":
            self.csv.writerows(rows)
        else:
            self.f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        self.f.flush()


def predict_rows(
    predictor, source: Source, f: TextIO, fmt: str, chunk_size: int = CHUNK_SIZE, progress=None
) -> Summary:
    """Score `source` chunk by chunk and write each chunk to `f` before reading the next."""
    rows = iter(source.rows)
    first = next(rows, None)
    if first is None:
        raise FinsentError(f"{source.name}: no sentences to score")
    input_columns = source.columns if source.columns is not None else list(first.fields)
    mapping, header = output_columns(predictor.labels, input_columns)
    writer = _Writer(f, fmt, header)
    summary = Summary()
    done = 0
    for chunk in chunked(itertools.chain([first], rows), chunk_size):
        texts = [r.text for r in chunk if r.text is not None]
        scores = predictor.score(texts).records() if texts else []
        it = iter(scores)
        out = []
        for row in chunk:
            pred = next(it) if row.text is not None else None
            out.append({**row.fields, **_flatten(pred, mapping, predictor.labels, fmt)})
            if pred is None:
                summary.empty += 1
                if len(summary.empty_where) < 3:
                    summary.empty_where.append(row.where)
            elif pred["truncated"]:
                summary.truncated += 1
        writer.write(out)
        summary.rows += len(chunk)
        summary.scored += len(texts)
        if progress is not None:
            if source.position is not None:
                position = source.position()
                progress.update(position - done)
                done = position
            else:
                progress.update(len(chunk))
    return summary


def _flatten(pred: dict | None, mapping: dict[str, str], labels: Iterable[str], fmt: str) -> dict:
    if pred is None:
        empty = None if fmt == "jsonl" else ""
        return {name: empty for name in mapping.values()}
    return {
        mapping["label"]: pred["label"],
        mapping["confidence"]: pred["confidence"],
        **{mapping[f"prob_{label}"]: pred["probabilities"][label] for label in labels},
        mapping["truncated"]: pred["truncated"],
    }


def run(
    predictor,
    source: Source,
    output: str | Path | None = None,
    chunk_size: int = CHUNK_SIZE,
    show_progress: bool = True,
    stdout: TextIO | None = None,
) -> Summary:
    """Score a source into `output` (csv/jsonl, written atomically) or as JSON Lines on stdout."""
    from tqdm import tqdm

    if chunk_size < 1:
        raise FinsentError(f"--chunk_size {chunk_size}: must be at least 1")
    fmt = output_format(Path(output)) if output else "jsonl"
    if output and Path(output).resolve() == Path(source.name).resolve():
        raise FinsentError(f"--output {output}: is the input file; write the predictions to another file")
    byte_progress = source.position is not None
    bar = tqdm(
        total=source.size if byte_progress else None,
        unit="B" if byte_progress else " rows",
        unit_scale=byte_progress,
        unit_divisor=1024 if byte_progress else 1000,
        desc="predict",
        file=sys.stderr,
        disable=not show_progress,
        leave=False,
    )
    result: list[Summary] = []
    try:
        if output:
            write_stream(
                Path(output), lambda f: result.append(predict_rows(predictor, source, f, fmt, chunk_size, bar))
            )
        else:
            result.append(predict_rows(predictor, source, stdout or sys.stdout, fmt, chunk_size, bar))
    except OSError as e:
        if output is None:
            raise
        raise FinsentError(
            f"--output {output}: cannot write ({e.strerror}); check the folder exists and is writable"
        ) from None
    finally:
        bar.close()
        source.close()
    return result[0]
