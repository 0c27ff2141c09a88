"""Shards of `finsent score`: discovery, reading, scoring a table, and the Parquet output published whole (resumable)."""

from __future__ import annotations

import json
import re
import secrets
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from finsent.core.errors import FinsentError
from finsent.core.remote import (
    filesystem,
    is_local,
    put_file,
    storage_errors,
)
from finsent.data import tables

ENGINES = ("local", "ray")
SHARD_FORMATS = ("csv", "tsv", "jsonl", "parquet")  # read by finsent.tables, plain or compressed
SUMMARY = "_summary.json"
META_KEY = "finsent"
CHUNK_SIZE = 2048
_TEMP = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


@dataclass(frozen=True)
class ScoreConfig:
    """A `finsent score` job; validates itself."""

    model_dir: str = field(metadata={"help": "a training run folder, local or s3://bucket/run (cached locally)"})
    input: str = field(metadata={"help": "a .csv/.tsv/.jsonl/.parquet file, a folder or a glob; local or s3://"})
    output: str = field(metadata={"help": "folder for one Parquet file per input shard and _summary.json"})
    engine: Literal["local", "ray"] = field(
        default="local", metadata={"help": "local: this process; ray: Ray Data actors (default: %(default)s)"}
    )
    num_workers: int = field(default=1, metadata={"help": "Ray actors, one model each (default: %(default)s)"})
    ray_address: str | None = field(
        default=None, metadata={"help": "a running Ray cluster, e.g. ray://head:10001 or auto"}
    )
    backend: Literal["auto", "torch", "onnx"] = field(
        default="auto",
        metadata={
            "help": "auto (the run's fresh export on its fastest ONNX engine for this CPU, else torch), torch or onnx "
            "(default: %(default)s)"
        },
    )
    onnx_runtime: Literal["openvino", "onnxruntime"] | None = field(
        default=None,
        metadata={
            "help": "what runs --backend onnx (default: the engine export-onnx tuned for the CPU, else openvino)"
        },
    )
    text_column: str = field(
        default="text", metadata={"help": "the column holding the sentence (default: %(default)s)"}
    )
    batch_size: int = field(default=32, metadata={"help": "sentences per forward pass (default: %(default)s)"})
    chunk_size: int = field(
        default=CHUNK_SIZE, metadata={"help": "rows read and scored at a time (default: %(default)s)"}
    )
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads per model (default: all cores locally, 1 per Ray actor)"}
    )
    entity_column: str | None = field(
        default=None,
        metadata={"help": "an entity run: the column naming each row's entity (several separated by |, or a list)"},
    )
    entities: str | None = field(
        default=None,
        metadata={
            "help": "an entity run: a watchlist (name, optional aliases separated by |, ticker); one output row per "
            "entity found in each text",
            "metavar": "WATCHLIST",
        },
    )
    date_column: str | None = field(
        default=None,
        metadata={
            "help": "with an entity run: the column holding each row's date; writes the daily per-entity table "
            "(_entity_daily.csv/.parquet) and its HTML report (_entity_report.html) beside the Parquet output"
        },
    )
    quiet: bool = field(default=False, metadata={"help": "no progress on stderr"})

    def __post_init__(self):
        from finsent.inference.backends import BACKENDS, ONNX_RUNTIMES

        if self.onnx_runtime is not None and self.onnx_runtime not in ONNX_RUNTIMES:
            raise FinsentError(f"--onnx_runtime {self.onnx_runtime!r}: expected one of {', '.join(ONNX_RUNTIMES)}")
        if self.engine not in ENGINES:
            raise FinsentError(f"--engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if self.backend not in ("auto", *BACKENDS):
            raise FinsentError(f"--backend {self.backend!r}: expected one of auto, {', '.join(BACKENDS)}")
        for name in ("num_workers", "batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise FinsentError(f"--{name} {getattr(self, name)}: must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise FinsentError(f"--threads {self.threads}: must be at least 1")
        if self.ray_address and self.engine != "ray":
            raise FinsentError("--ray_address needs --engine ray")
        if self.entity_column and self.entities:
            raise FinsentError("give --entity_column (entities named per row) or --entities WATCHLIST, not both")
        if self.date_column and not (self.entity_column or self.entities):
            raise FinsentError(
                "--date_column needs an entity run and its entities: --entity_column COLUMN or --entities WATCHLIST"
            )


@dataclass(frozen=True)
class Shard:
    """One input file: where it is, its name under the input root, and what tells a changed file (size, ETag/mtime)."""

    url: str
    name: str
    size: int
    version: str

    @property
    def output_name(self) -> str:
        return tables.base_name(self.name) + ".parquet"

    def source(self) -> dict:
        return {"input": self.name, "size": self.size, "version": self.version}


@dataclass
class ShardResult:
    """What one shard's output holds, as recorded in its Parquet footer."""

    output: str
    rows: int = 0
    empty: int = 0
    truncated: int = 0
    label_counts: dict = field(default_factory=dict)
    scored_now: bool = True


def shard_format(url: str) -> str | None:
    """csv, tsv, jsonl or parquet from the file name (a .gz/.bz2/.xz/.zst suffix is looked through), else None."""
    fmt = tables.table_format(url)
    return fmt if fmt in SHARD_FORMATS else None


def _version(info: dict) -> str:
    return str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or "")


def discover_shards(input_url: str, output_url: str | None = None) -> list[Shard]:
    """The shards of a file, a folder (recursively) or a glob; files under the output folder are left out."""
    fs, path = filesystem(input_url)
    out_path = None
    if output_url is not None:
        out_fs, out_path = filesystem(output_url)
        out_path = out_path.rstrip("/") + "/" if out_fs.protocol == fs.protocol else None
    with storage_errors(f"--input {input_url}"):
        fs.invalidate_cache()  # s3fs keeps listings per process: look at the bucket as it is now
        if any(c in path for c in "*?["):
            found = fs.glob(path, detail=True)
            root = re.split(r"[*?\[]", path, maxsplit=1)[0].rsplit("/", 1)[0]
        elif fs.isdir(path):
            found = fs.find(path, detail=True)
            root = path.rstrip("/")
        elif fs.isfile(path):
            if shard_format(path) is None:
                raise FinsentError(f"--input {input_url}: expected a .csv, .tsv, .jsonl or .parquet file (or a folder)")
            found = {path: fs.info(path)}
            root = path.rsplit("/", 1)[0] if "/" in path else ""
        else:
            raise FinsentError(f"--input {input_url}: no such file or folder")
    shards = []
    for p, info in sorted(found.items()):
        base = p.rsplit("/", 1)[-1]
        if info.get("type") != "file" or shard_format(p) is None or base.startswith((".", "_")):
            continue
        if out_path is not None and p.startswith(out_path):
            continue
        url = p if is_local(fs) else fs.unstrip_protocol(p)
        shards.append(Shard(url, p[len(root) + 1 :] if root else p, int(info["size"]), _version(info)))
    if not shards:
        raise FinsentError(f"--input {input_url}: no .csv, .tsv, .jsonl or .parquet files there")
    seen: dict[str, str] = {}
    for s in shards:
        if s.output_name in seen:
            raise FinsentError(
                f"--input {input_url}: {seen[s.output_name]} and {s.name} would both be written to {s.output_name}; rename one"
            )
        seen[s.output_name] = s.name
    return shards


def _read_shard(url: str, text_column: str, chunk_size: int = CHUNK_SIZE, extra: tuple = ()) -> Iterator:
    """A shard as pyarrow Tables of `chunk_size` rows (read by finsent.tables), its text column holding text; `extra`
    names other columns it must have, as (column, flag) pairs."""
    import pyarrow as pa

    with storage_errors(url):
        chunks = tables.read_chunks(url, (text_column,), "set --text_column", chunk_size)
        first = next(chunks)
        kind = first.schema.field(text_column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise FinsentError(f"{url}: column {text_column!r} holds {kind}, not text; set --text_column")
        for column, flag in extra:
            if column not in first.column_names:
                raise FinsentError(f"{url}: no column {column!r} among {first.column_names}; set {flag}")
        yield first
        yield from chunks


def prediction_columns(labels, input_columns) -> list[str]:
    """The names of the prediction columns appended to a shard's columns (prefixed pred_ where taken)."""
    from finsent.apps.predict import output_columns

    return list(output_columns(labels, input_columns)[0].values())


def table_inputs(table, text_column: str):
    """A chunk ready to score: the table (pandas' index notes, which no longer describe it, dropped) and its texts."""
    table = table.replace_schema_metadata(None)
    return table, table.column(text_column).to_pylist()


def score_inputs(predictor, inputs: list):
    """The Scores of the inputs that are neither None nor blank, in order; None where there are none."""
    keep = [t for t in inputs if t is not None and t.strip()]
    return predictor.score(keep) if keep else None


def append_scores(table, inputs: list, scores, labels):
    """The table with label, confidence, prob_<label> and truncated appended from score_inputs' `scores` of its rows'
    model `inputs`; None or blank inputs get nulls."""
    import pyarrow as pa

    keep = np.array([i for i, t in enumerate(inputs) if t is not None and t.strip()], dtype=np.int64)
    n = len(inputs)
    probs = np.zeros((n, len(labels)))
    truncated = np.zeros(n, dtype=bool)
    if len(keep):
        probs[keep], truncated[keep] = scores.probs, scores.truncated
    missing = np.ones(n, dtype=bool)
    missing[keep] = False
    pred = probs.argmax(axis=1)
    names = prediction_columns(labels, table.column_names)
    values = [
        pa.array(np.array(labels, dtype=object)[pred], type=pa.string(), mask=missing),
        pa.array(probs[np.arange(n), pred], mask=missing),
        *[pa.array(probs[:, j], mask=missing) for j in range(len(labels))],
        pa.array(truncated, mask=missing),
    ]
    for name, value in zip(names, values):
        table = table.append_column(name, value)
    return table


class ShardOutput:
    """One shard's Parquet file, filled chunk by chunk in a temp file and published only when complete."""

    def __init__(self, fs, out_root: str, shard: Shard, labels, meta: dict):
        self.fs, self.shard, self.labels, self.meta = fs, shard, tuple(labels), meta
        self.path = f"{out_root}/{shard.output_name}"
        token = secrets.token_hex(8)
        if is_local(fs):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(self.path).parent / f".{Path(self.path).name}.{token}.tmp"
        else:
            self.tmp = Path(tempfile.gettempdir()) / f".finsent-{token}-{Path(self.path).name}.tmp"
        self.writer = None
        self.result = ShardResult(shard.output_name)
        self.counts: Counter = Counter()

    def write(self, table) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)
        label, truncated = table.column(len(table.column_names) - len(self.labels) - 3), table.column(-1)
        self.result.rows += table.num_rows
        self.result.empty += label.null_count
        self.result.truncated += int(pc.sum(truncated).as_py() or 0)
        self.counts.update(v for v in label.to_pylist() if v is not None)

    def publish(self) -> ShardResult:
        self.result.label_counts = {label: self.counts.get(label, 0) for label in self.labels}
        meta = {**self.meta, "source": self.shard.source(), **_counts(self.result)}
        self.writer.add_key_value_metadata({META_KEY: json.dumps(meta)})
        self.writer.close()
        with storage_errors(f"--output {self.path}"):
            put_file(self.fs, self.tmp, self.path)
        return self.result

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


def _counts(result: ShardResult) -> dict:
    return {
        "rows": result.rows,
        "empty": result.empty,
        "truncated": result.truncated,
        "label_counts": result.label_counts,
    }


def completed(fs, path: str, shard: Shard, meta: dict) -> ShardResult | None:
    """The recorded result if `path` is a complete output of this very shard, text column and model, else None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as f:
            footer = pq.ParquetFile(f).metadata
        recorded = json.loads((footer.metadata or {})[META_KEY.encode()])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None  # missing, unreadable or not ours: score it (again)
    if recorded.get("source") != shard.source() or recorded.get("text_column") != meta["text_column"]:
        return None
    if recorded.get("entities") != meta.get("entities"):  # pairs from another entity column or watchlist
        return None
    if recorded.get("rows") != footer.num_rows:
        return None
    if recorded.get("model") != meta["model"]:
        raise FinsentError(
            f"{path}: scored with model {recorded.get('model', {}).get('version')} ({recorded.get('model', {}).get('backend')}), not "
            f"{meta['model']['version']} ({meta['model']['backend']}) as now; write to another --output or delete that folder"
        )
    return ShardResult(
        shard.output_name,
        recorded["rows"],
        recorded["empty"],
        recorded["truncated"],
        recorded["label_counts"],
        scored_now=False,
    )


def _remove_stale_temps(fs, out_root: str) -> None:
    """Temp files a killed run left in a local output folder (never taken as output: their names start with a dot)."""
    if is_local(fs) and Path(out_root).is_dir():
        for p in Path(out_root).rglob(".*.tmp"):
            if _TEMP.match(p.name):
                p.unlink(missing_ok=True)


def model_identity(model_dir: Path, backend: str) -> dict:
    """What must match for an earlier output to count as done: version, backend and the weights' sha256."""
    from finsent.runs.folder import read_model_info, weights_digest

    info = read_model_info(model_dir)
    return {"version": info.version, "backend": backend, "weights_sha256": weights_digest(model_dir)}
