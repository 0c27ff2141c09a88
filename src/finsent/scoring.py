"""`finsent score`: CSV/JSONL/Parquet shards (local or any fsspec URL) to a Parquet dataset, resumable, locally or on Ray Data.

Each input shard becomes one Parquet file (its rows and columns plus the prediction columns) written to a temp file
and published under its final name only when complete (a rename on disk, a single PUT on object storage). The
file's footer records the source shard (size and ETag/mtime), the model and the row count, so a re-run skips the
shards whose output is complete and scores the rest; `_summary.json` is written when every shard is done.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finsent import tables
from finsent.errors import FinsentError
from finsent.remote import (
    SCALE_EXTRA,
    filesystem,
    is_local,
    local_model_dir,
    put_file,
    storage_errors,
    write_bytes,
)

ENGINES = ("local", "ray")
SHARD_FORMATS = ("csv", "tsv", "jsonl", "parquet")  # read by finsent.tables, plain or compressed
SUMMARY = "_summary.json"
META_KEY = "finsent"
CHUNK_SIZE = 2048
WORKERS_PER_READER = 16  # reading a shard costs little next to scoring it: one reading task per 16 scoring workers
_TEMP = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


@dataclass(frozen=True)
class ScoreConfig:
    """A `finsent score` job; validates itself."""

    model_dir: str
    input: str
    output: str
    engine: str = "local"
    num_workers: int = 1
    ray_address: str | None = None
    backend: str = "torch"
    onnx_runtime: str = "openvino"
    text_column: str = "text"
    batch_size: int = 32
    chunk_size: int = CHUNK_SIZE
    threads: int | None = None
    quiet: bool = False

    def __post_init__(self):
        from finsent.inference import BACKENDS, ONNX_RUNTIMES

        if self.onnx_runtime not in ONNX_RUNTIMES:
            raise FinsentError(f"--onnx_runtime {self.onnx_runtime!r}: expected one of {', '.join(ONNX_RUNTIMES)}")
        if self.engine not in ENGINES:
            raise FinsentError(f"--engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if self.backend not in BACKENDS:
            raise FinsentError(f"--backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        for name in ("num_workers", "batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise FinsentError(f"--{name} {getattr(self, name)}: must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise FinsentError(f"--threads {self.threads}: must be at least 1")
        if self.ray_address and self.engine != "ray":
            raise FinsentError("--ray_address needs --engine ray")


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


def _read_shard(url: str, text_column: str, chunk_size: int = CHUNK_SIZE) -> Iterator:
    """A shard as pyarrow Tables of `chunk_size` rows (read by finsent.tables), its text column holding text."""
    import pyarrow as pa

    with storage_errors(url):
        chunks = tables.read_chunks(url, (text_column,), "set --text_column", chunk_size)
        first = next(chunks)
        kind = first.schema.field(text_column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise FinsentError(f"{url}: column {text_column!r} holds {kind}, not text; set --text_column")
        yield first
        yield from chunks


def prediction_columns(labels, input_columns) -> list[str]:
    """The names of the prediction columns appended to a shard's columns (prefixed pred_ where taken)."""
    from finsent.predict import output_columns

    return list(output_columns(labels, input_columns)[0].values())


def score_table(predictor, table, text_column: str):
    """The table with label, confidence, prob_<label> and truncated appended; empty texts get nulls."""
    import pyarrow as pa

    texts = table.column(text_column).to_pylist()
    keep = np.array([i for i, t in enumerate(texts) if t is not None and t.strip()], dtype=np.int64)
    n, labels = len(texts), predictor.labels
    probs = np.zeros((n, len(labels)))
    truncated = np.zeros(n, dtype=bool)
    if len(keep):
        scores = predictor.score([texts[i] for i in keep])
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
    table = table.replace_schema_metadata(None)  # e.g. pandas' index notes, which no longer describe the table
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
    from finsent.inference import read_model_info, weights_digest

    info = read_model_info(model_dir)
    return {"version": info.version, "backend": backend, "weights_sha256": weights_digest(model_dir)}


class _Progress:
    """rows/s and shards done on stderr (tqdm), or nothing with --quiet."""

    def __init__(self, total_shards: int, done: int, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(desc="score", unit=" rows", file=sys.stderr, disable=quiet, leave=False)
        self.total, self.done = total_shards, done
        self.bar.set_postfix_str(f"shards {done}/{total_shards}")

    def rows(self, n: int) -> None:
        self.bar.update(n)

    def shard_done(self) -> None:
        self.done += 1
        self.bar.set_postfix_str(f"shards {self.done}/{self.total}")

    def close(self) -> None:
        self.bar.close()


def _score_local(cfg: ScoreConfig, model_dir: Path, pending: list[Shard], open_output, progress) -> Iterator:
    from finsent.inference import Predictor

    predictor = Predictor(model_dir, cfg.backend, cfg.batch_size, cfg.threads, onnx_runtime=cfg.onnx_runtime)
    for shard in pending:
        out = open_output(shard, predictor.labels)
        try:
            for chunk in _read_shard(shard.url, cfg.text_column, cfg.chunk_size):
                out.write(score_table(predictor, chunk, cfg.text_column))
                progress.rows(chunk.num_rows)
            yield out.publish()
        except BaseException:
            out.discard()
            raise


def _ipc(table) -> bytes:
    import pyarrow as pa

    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_ipc(data: bytes):
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all()


def _read_chunks(batch: dict, text_column: str, chunk_size: int) -> Iterator[dict]:
    """Ray stage 1: one row per chunk of each shard (shard index, chunk index, last flag, the chunk as Arrow IPC)."""
    for index, url in zip(batch["shard"], batch["url"]):
        chunks = _read_shard(str(url), text_column, chunk_size)
        chunk, number = next(chunks), 0
        for following in chunks:
            yield {"shard": [int(index)], "chunk": [number], "last": [False], "table": [_ipc(chunk)]}
            chunk, number = following, number + 1
        yield {"shard": [int(index)], "chunk": [number], "last": [True], "table": [_ipc(chunk)]}


class _RayScorer:
    """Ray stage 2: one Predictor per actor; scores each chunk whole, as the local engine does."""

    def __init__(
        self, model_url: str, backend: str, batch_size: int, threads: int, text_column: str, onnx_runtime: str
    ):
        from transformers.utils import logging as hf_logging

        from finsent.inference import Predictor

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.predictor = Predictor(local_model_dir(model_url), backend, batch_size, threads, onnx_runtime=onnx_runtime)
        self.text_column = text_column

    def __call__(self, batch: dict) -> dict:
        batch = dict(batch)
        batch["table"] = [_ipc(score_table(self.predictor, _from_ipc(t), self.text_column)) for t in batch["table"]]
        return batch


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise FinsentError(f"--engine ray needs Ray Data: {SCALE_EXTRA}") from None
    return ray


def _finsent_error(e: BaseException) -> FinsentError | None:
    """The FinsentError a Ray task raised, however Ray wrapped it."""
    seen = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, FinsentError):
            return FinsentError(str(x))
        stack += [x.__cause__, x.__context__, getattr(x, "cause", None)]
    return None


def _score_ray(cfg: ScoreConfig, model_dir: Path, pending: list[Shard], open_output, progress) -> Iterator:
    import logging

    from finsent.inference import read_model_info

    ray = _import_ray()
    threads = cfg.threads or 1
    started = not ray.is_initialized()
    if started:
        common = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": not cfg.quiet}
        try:
            if cfg.ray_address:
                ray.init(address=cfg.ray_address, **common)
            else:
                ray.init(num_cpus=cfg.num_workers * threads, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise FinsentError(
                f"--ray_address {cfg.ray_address}: cannot connect to Ray ({str(e).splitlines()[0]})"
            ) from None
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.raise_original_map_exception = True
        ctx.target_max_block_size = 1  # every chunk its own block, so the actors share a shard chunk by chunk
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        items = [{"shard": i, "url": s.url} for i, s in enumerate(pending)]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            _read_chunks,
            batch_size=1,
            num_cpus=0,
            concurrency=max(1, cfg.num_workers // WORKERS_PER_READER),
            fn_kwargs={"text_column": cfg.text_column, "chunk_size": cfg.chunk_size},
        )
        model_url = cfg.model_dir if "://" in cfg.model_dir else str(model_dir.resolve())
        ds = ds.map_batches(
            _RayScorer,
            batch_size=1,
            num_cpus=threads,
            concurrency=cfg.num_workers,
            fn_constructor_kwargs={
                "model_url": model_url,
                "backend": cfg.backend,
                "batch_size": cfg.batch_size,
                "threads": threads,
                "text_column": cfg.text_column,
                "onnx_runtime": cfg.onnx_runtime,
            },
        )
        labels = read_model_info(model_dir).labels
        out, expect = None, (0, 0)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in batch.to_pylist():
                    if (row["shard"], row["chunk"]) != expect:
                        raise RuntimeError(f"Ray returned chunk {row['shard']}.{row['chunk']}, expected {expect}")
                    if out is None:
                        out = open_output(pending[row["shard"]], labels)
                    table = _from_ipc(row["table"])
                    out.write(table)
                    progress.rows(table.num_rows)
                    if row["last"]:
                        yield out.publish()
                        out, expect = None, (row["shard"] + 1, 0)
                    else:
                        expect = (row["shard"], row["chunk"] + 1)
        except Exception as e:
            error = _finsent_error(e)
            if error is None:
                raise
            raise error from None
        finally:
            if out is not None:
                out.discard()
    finally:
        if started:
            ray.shutdown()


def score(cfg: ScoreConfig) -> dict:
    """Run the job: plan (skip complete shards), score the rest with the chosen engine, write the summary."""
    start = time.perf_counter()
    shards = discover_shards(cfg.input, cfg.output)
    out_fs, out_root = filesystem(cfg.output)
    out_root = out_root.rstrip("/")
    with storage_errors(f"--model_dir {cfg.model_dir}"):
        model_dir = local_model_dir(cfg.model_dir)
    meta = {"format": 1, "text_column": cfg.text_column, "model": model_identity(model_dir, cfg.backend)}
    with storage_errors(f"--output {cfg.output}"):
        _remove_stale_temps(out_fs, out_root)
        out_fs.invalidate_cache()
        existing = set(out_fs.find(out_root)) if out_fs.exists(out_root) else set()
        results: dict[str, ShardResult] = {}
        for shard in shards:
            path = f"{out_root}/{shard.output_name}"
            done = completed(out_fs, path, shard, meta) if path in existing else None
            if done is not None:
                results[shard.name] = done
    pending = [s for s in shards if s.name not in results]
    progress = _Progress(len(shards), len(results), cfg.quiet)

    def open_output(shard: Shard, labels) -> ShardOutput:
        return ShardOutput(out_fs, out_root, shard, labels, meta)

    engine = _score_ray if cfg.engine == "ray" else _score_local
    try:
        if pending:
            for shard, result in zip(pending, engine(cfg, model_dir, pending, open_output, progress)):
                results[shard.name] = result
                progress.shard_done()
    finally:
        progress.close()
    elapsed = time.perf_counter() - start
    summary = _summary(cfg, shards, results, meta["model"], elapsed)
    with storage_errors(f"--output {cfg.output}"):
        write_bytes(out_fs, f"{out_root}/{SUMMARY}", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary


def _summary(cfg: ScoreConfig, shards: list[Shard], results: dict[str, ShardResult], model: dict, elapsed: float):
    now = [results[s.name] for s in shards if results[s.name].scored_now]
    labels: Counter = Counter()
    for r in results.values():
        labels.update(r.label_counts)
    rows_now = sum(r.rows for r in now)
    return {
        "rows": sum(r.rows for r in results.values()),
        "scored": sum(r.rows - r.empty for r in results.values()),
        "empty": sum(r.empty for r in results.values()),
        "truncated": sum(r.truncated for r in results.values()),
        "label_counts": dict(labels),
        "model": {**model, "model_dir": cfg.model_dir},
        "input": cfg.input,
        "output": cfg.output,
        "text_column": cfg.text_column,
        "engine": cfg.engine,
        "num_workers": cfg.num_workers if cfg.engine == "ray" else 1,
        "elapsed_s": round(elapsed, 3),
        "rows_scored_this_run": rows_now,
        "rows_per_s_this_run": round(rows_now / elapsed, 1) if elapsed > 0 else None,
        "shards_total": len(shards),
        "shards_scored_this_run": len(now),
        "shards_done_earlier": len(shards) - len(now),
        "shards": [
            {
                "input": s.name,
                "output": results[s.name].output,
                **_counts(results[s.name]),
                "scored_now": results[s.name].scored_now,
            }
            for s in shards
        ],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
