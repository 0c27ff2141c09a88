"""`finsent score`: CSV/JSONL/Parquet shards (local or any fsspec URL) to a Parquet dataset, resumable, locally or on Ray Data.

Each input shard becomes one Parquet file (its rows and columns plus the prediction columns) written to a temp file
and published under its final name only when complete (a rename on disk, a single PUT on object storage). The
file's footer records the source shard (size and ETag/mtime), the model and the row count, so a re-run skips the
shards whose output is complete and scores the rest; `_summary.json` is written when every shard is done.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

from finsent.apps.entity_shards import chunk_inputs, pairing_for, required_columns
from finsent.apps.score_ray import _score_ray
from finsent.apps.shards import (
    SUMMARY,
    ScoreConfig,
    Shard,
    ShardOutput,
    ShardResult,
    _counts,
    _read_shard,
    _remove_stale_temps,
    append_scores,
    completed,
    discover_shards,
    model_identity,
    score_inputs,
)
from finsent.core.pipeline import WriteBehind, prefetch
from finsent.core.remote import (
    filesystem,
    local_model_dir,
    storage_errors,
    write_bytes,
)
from finsent.inference.factory import resolve_backend


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


@dataclasses.dataclass
class _Chunk:
    """A chunk of a shard on its way through the local engine's stages; no table: the end of the shard."""

    shard: Shard
    rows: int = 0  # input rows (an entity run's table has a row per pair)
    table: object = None
    inputs: list = dataclasses.field(default_factory=list)
    scores: object = None


def _shard_chunks(cfg: ScoreConfig, pending: list[Shard], pairing) -> Iterator[_Chunk]:
    """The reading stage: each shard's chunks ready to score, then its end."""
    for shard in pending:
        for chunk in _read_shard(shard.url, cfg.text_column, cfg.chunk_size, required_columns(cfg)):
            yield _Chunk(shard, chunk.num_rows, *chunk_inputs(chunk, cfg.text_column, pairing))
        yield _Chunk(shard)


class _ShardWriter:
    """The writing stage: each shard's scored chunks into its ShardOutput (a temp file), published at its end."""

    def __init__(self, open_output, labels, progress):
        self.open_output, self.labels, self.progress = open_output, tuple(labels), progress
        self.out: ShardOutput | None = None  # the shard being written
        self.published: list[ShardResult] = []
        self.taken = 0

    def write(self, chunk: _Chunk) -> None:
        if chunk.table is None:
            self.published.append(self.out.publish())
            self.out = None
            return
        if self.out is None:
            self.out = self.open_output(chunk.shard, self.labels)
        self.out.write(append_scores(chunk.table, chunk.inputs, chunk.scores, self.labels))
        self.progress.rows(chunk.rows)

    def take(self) -> list[ShardResult]:
        """The results published since the last call."""
        new = self.published[self.taken :]
        self.taken += len(new)
        return new

    def discard(self) -> None:
        """The temp file of a shard left half written removed (once the stage has stopped)."""
        if self.out is not None:
            self.out.discard()
            self.out = None


def _score_local(
    cfg: ScoreConfig, model_dir: Path, pending: list[Shard], open_output, progress, pairing=None
) -> Iterator:
    """The pending shards' results in order, three stages at once: chunks read ahead on a thread, across shards
    (prefetch), scored here, and written and published on another (WriteBehind)."""
    from finsent.inference.factory import PredictorOptions, build_predictor

    predictor = build_predictor(
        model_dir,
        PredictorOptions(
            backend=cfg.backend, onnx_runtime=cfg.onnx_runtime, batch_size=cfg.batch_size, threads=cfg.threads
        ),
    )
    writing = _ShardWriter(open_output, predictor.labels, progress)
    try:
        with WriteBehind(writing.write) as writer, closing(prefetch(_shard_chunks(cfg, pending, pairing))) as ahead:
            for chunk in ahead:
                yield from writing.take()  # before the put: the last shard's result only once all is written
                chunk.scores = score_inputs(predictor, chunk.inputs)
                writer.put(chunk)
    finally:
        writing.discard()
    yield from writing.take()


def score(cfg: ScoreConfig) -> dict:
    """Run the job: plan (skip complete shards), score the rest with the chosen engine, write the summary."""
    start = time.perf_counter()
    shards = discover_shards(cfg.input, cfg.output)
    out_fs, out_root = filesystem(cfg.output)
    out_root = out_root.rstrip("/")
    with storage_errors(f"--model_dir {cfg.model_dir}"):
        model_dir = local_model_dir(cfg.model_dir)
    pairing = pairing_for(cfg, model_dir)  # None for a sentence run; one line when the run and the flags disagree
    cfg = dataclasses.replace(
        cfg, backend=resolve_backend(model_dir, cfg.backend)[0]
    )  # auto: one choice for all shards
    meta = {"format": 1, "text_column": cfg.text_column, "model": model_identity(model_dir, cfg.backend)}
    if pairing is not None:
        meta["entities"] = pairing.identity()
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
            for shard, result in zip(pending, engine(cfg, model_dir, pending, open_output, progress, pairing)):
                results[shard.name] = result
                progress.shard_done()
    finally:
        progress.close()
    elapsed = time.perf_counter() - start
    summary = _summary(cfg, shards, results, meta["model"], elapsed)
    if pairing is not None:
        summary.update(task="entity", entity_column=cfg.entity_column, entities=cfg.entities)
    if cfg.date_column:
        summary["entity_daily"] = _entity_daily(
            cfg, out_fs, out_root, [results[s.name].output for s in shards], model_dir
        )
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


def _entity_daily(cfg: ScoreConfig, fs, out_root: str, outputs: list[str], model_dir: Path) -> dict:
    """The daily per-entity table and its HTML report beside the Parquet output (every shard's, done now or earlier)."""
    from finsent.apps.entity_daily import entity_daily
    from finsent.runs.folder import read_model_info

    info = read_model_info(model_dir)
    title = f"finsent score: daily entity sentiment ({info.version}, {cfg.input})"
    return entity_daily(fs, out_root, outputs, cfg.date_column, info.labels, title)
