"""Batch prediction: sentences from arguments, stdin or a table (finsent.tables), streamed in chunks to csv/jsonl."""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from finsent.core.errors import FinsentError
from finsent.core.pipeline import WriteBehind, prefetch
from finsent.core.serialization import neutralise_cell, write_stream
from finsent.core.text import is_valid_unicode
from finsent.data import tables

CHUNK_SIZE = 2048
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass
class Row:
    """One input record: its fields in input order, the text to score (None if empty) and where it came from;
    no_entity: an entity run's row kept unscored because it names no entity (apps.entity_predict)."""

    fields: dict
    text: str | None
    where: str
    no_entity: bool = False


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
    no_entity: int = 0  # an entity run's rows that name no entity (kept with empty predictions)


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FinsentError(f"--output {path}: expected a .csv or .jsonl file name")
    return fmt


def _clean(text: str | None) -> str | None:
    return text if text is not None and text.strip() else None


def _text_rows(rows: Iterator[tables.Row], text_column: str) -> Iterator[Row]:
    """The rows of a table with the text to score: a string, or null/empty for nothing to score."""
    for row in rows:
        if text_column not in row.fields:
            raise FinsentError(
                f"{row.where}: no field {text_column!r}; set --text_column to the field holding the sentence"
            )
        text = row.fields[text_column]
        if text is not None and not isinstance(text, str):
            raise FinsentError(f"{row.where}: field {text_column!r} must be a string, got {type(text).__name__}")
        if text is not None and not is_valid_unicode(text):
            raise FinsentError(
                f"{row.where}: field {text_column!r} is not valid Unicode (a lone surrogate escape); fix the text"
            )
        yield Row(row.fields, _clean(text), row.where)


def open_file(path: str | Path, text_column: str = "text") -> Source:
    """Open a table (csv, tsv, json, jsonl, parquet or txt; a path or URL) for streaming."""
    table = tables.open_table(
        path,
        (text_column,),
        hint="set --text_column",
        missing="no such input file; pass --input pointing at a .csv, .tsv, .json, .jsonl, .parquet or .txt file",
    )
    return Source(
        table.name, table.columns, _text_rows(table.rows, text_column), table.size, table.position, table.close
    )


def open_stdin(stream: TextIO | None = None) -> Source:
    """Sentences on stdin, one a line, read as UTF-8."""
    stream = stream if stream is not None else sys.stdin
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream = io.TextIOWrapper(buffer, encoding="utf-8-sig")
    rows = tables.decoded(tables.txt_rows(stream, "<stdin>"), "<stdin>")
    return Source("<stdin>", ["text"], _text_rows(rows, "text"))


def open_args(texts: list[str]) -> Source:
    return Source("<arguments>", ["text"], _text_rows(tables.txt_rows(texts, "argument"), "text"))


def output_columns(
    labels: Iterable[str], input_columns: Iterable[str], extra: Iterable[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """Prediction column names (prefixed `pred_` where the input already has such a column) and the full header."""
    names = ["label", "confidence", *[f"prob_{label}" for label in labels], "truncated", *extra]
    taken = set(input_columns)
    prefix = "pred_" if taken & set(names) else ""
    mapping = {n: prefix + n for n in names}
    return mapping, [*input_columns, *mapping.values()]


class _Writer:
    """Rows to an open text stream as CSV (fixed header) or JSON Lines.

    In CSV, the header and the string cells of the input columns (the user's text) go through neutralise_cell, so that
    a spreadsheet shows them as text instead of running them as formulas; raw_csv writes them as they are.
    """

    def __init__(
        self, f: TextIO, fmt: str, header: list[str], input_columns: Iterable[str] = (), raw_csv: bool = False
    ):
        self.f, self.fmt = f, fmt
        self.neutralise = [] if raw_csv else list(input_columns)
        if fmt == "csv":
            self.csv = csv.DictWriter(f, fieldnames=header, extrasaction="ignore", restval="")
            self.csv.writerow({name: name if raw_csv else neutralise_cell(name) for name in header})

    def write(self, rows: list[dict]) -> None:
        if self.fmt == "csv":
            if self.neutralise:
                rows = [{**r, **{k: neutralise_cell(r[k]) for k in self.neutralise if k in r}} for r in rows]
            self.csv.writerows(rows)
        else:
            self.f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        self.f.flush()


def predict_rows(
    predictor,
    source: Source,
    f: TextIO,
    fmt: str,
    chunk_size: int = CHUNK_SIZE,
    progress=None,
    raw_csv: bool = False,
) -> Summary:
    """Score `source` chunk by chunk into `f`, in input order, three stages at once: the next chunks are read on a
    thread (prefetch), this thread only scores, and the scored chunks are formatted and written on another
    (WriteBehind); the first error of any stage is raised here (raw_csv: see _Writer)."""
    rows = iter(source.rows)
    first = next(rows, None)
    if first is None:
        raise FinsentError(f"{source.name}: no sentences to score")
    input_columns = source.columns if source.columns is not None else list(first.fields)
    extra = getattr(predictor, "extra_fields", ())
    mapping, header = output_columns(predictor.labels, input_columns, extra)
    out = _ScoredChunks(_Writer(f, fmt, header, input_columns, raw_csv), mapping, predictor.labels, extra, progress)
    chunks = _read_chunks(source, itertools.chain([first], rows), chunk_size)
    with WriteBehind(out.write) as writer, closing(prefetch(chunks)) as ahead:
        for chunk, texts, position in ahead:
            writer.put((chunk, predictor.score(texts) if texts else None, position))
    return out.summary


def _read_chunks(source: Source, rows: Iterator[Row], chunk_size: int) -> Iterator[tuple[list[Row], list[str], int]]:
    """(rows, their texts to score, how far into the source) per chunk; `position` read right after the chunk."""
    for chunk in tables.chunked(rows, chunk_size):
        position = source.position() if source.position is not None else None
        yield chunk, [r.text for r in chunk if r.text is not None], position


class _ScoredChunks:
    """The writing stage of predict_rows: each scored chunk formatted and written, counted and shown as progress."""

    def __init__(self, writer: _Writer, mapping: dict[str, str], labels, extra, progress):
        self.writer, self.mapping, self.labels, self.extra, self.progress = writer, mapping, labels, extra, progress
        self.summary = Summary()
        self.done = 0

    def write(self, item: tuple) -> None:
        chunk, scores, position = item
        preds = iter(scores.records() if scores is not None else ())
        summary, out = self.summary, []
        for row in chunk:
            pred = next(preds) if row.text is not None else None
            out.append({**row.fields, **_flatten(pred, self.mapping, self.labels, self.writer.fmt, self.extra)})
            if pred is None and row.no_entity:
                summary.no_entity += 1
            elif pred is None:
                summary.empty += 1
                if len(summary.empty_where) < 3:
                    summary.empty_where.append(row.where)
            elif pred["truncated"]:
                summary.truncated += 1
        self.writer.write(out)
        summary.rows += len(chunk)
        summary.scored += sum(r.text is not None for r in chunk)
        if self.progress is not None and position is None:
            self.progress.update(len(chunk))
        elif self.progress is not None:
            self.progress.update(position - self.done)
            self.done = position


def _flatten(pred: dict | None, mapping: dict[str, str], labels: Iterable[str], fmt: str, extra=()) -> dict:
    if pred is None:
        empty = None if fmt == "jsonl" else ""
        return {name: empty for name in mapping.values()}
    return {
        mapping["label"]: pred["label"],
        mapping["confidence"]: pred["confidence"],
        **{mapping[f"prob_{label}"]: pred["probabilities"][label] for label in labels},
        mapping["truncated"]: pred["truncated"],
        **{mapping[name]: pred[name] for name in extra},
    }


def run(
    predictor,
    source: Source,
    output: str | Path | None = None,
    chunk_size: int = CHUNK_SIZE,
    show_progress: bool = True,
    stdout: TextIO | None = None,
    raw_csv: bool = False,
) -> Summary:
    """Score a source into `output` (csv/jsonl, written atomically) or as JSON Lines on stdout.

    A CSV's input cells that a spreadsheet would run as formulas get a leading ' (neutralise_cell), unless raw_csv."""
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
                Path(output), lambda f: result.append(predict_rows(predictor, source, f, fmt, chunk_size, bar, raw_csv))
            )
        else:
            result.append(predict_rows(predictor, source, stdout or sys.stdout, fmt, chunk_size, bar, raw_csv))
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
