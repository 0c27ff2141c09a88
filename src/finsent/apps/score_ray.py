"""`finsent score --engine ray`: the shards scored by Ray Data actors."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from finsent.apps.entity_shards import required_columns, score_chunk
from finsent.apps.shards import ScoreConfig, Shard, _read_shard
from finsent.core.errors import FinsentError
from finsent.core.remote import (
    SCALE_EXTRA,
    local_model_dir,
)

WORKERS_PER_READER = 16  # reading a shard costs little next to scoring it: one reading task per 16 scoring workers


def _ipc(table) -> bytes:
    import pyarrow as pa

    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_ipc(data: bytes):
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all()


def _read_chunks(batch: dict, text_column: str, chunk_size: int, extra: tuple = ()) -> Iterator[dict]:
    """Ray stage 1: one row per chunk of each shard (shard index, chunk index, last flag, the chunk as Arrow IPC)."""
    for index, url in zip(batch["shard"], batch["url"]):
        chunks = _read_shard(str(url), text_column, chunk_size, extra)
        chunk, number = next(chunks), 0
        for following in chunks:
            yield {"shard": [int(index)], "chunk": [number], "last": [False], "table": [_ipc(chunk)]}
            chunk, number = following, number + 1
        yield {"shard": [int(index)], "chunk": [number], "last": [True], "table": [_ipc(chunk)]}


class _RayScorer:
    """Ray stage 2: one Predictor per actor; scores each chunk whole, as the local engine does."""

    def __init__(
        self,
        model_url: str,
        backend: str,
        batch_size: int,
        threads: int,
        text_column: str,
        onnx_runtime: str,
        pairing=None,
    ):
        from transformers.utils import logging as hf_logging

        from finsent.inference.factory import PredictorOptions, build_predictor

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.predictor = build_predictor(
            local_model_dir(model_url),
            PredictorOptions(backend=backend, onnx_runtime=onnx_runtime, batch_size=batch_size, threads=threads),
        )
        self.text_column, self.pairing = text_column, pairing

    def __call__(self, batch: dict) -> dict:
        batch = dict(batch)
        batch["table"] = [
            _ipc(score_chunk(self.predictor, _from_ipc(t), self.text_column, self.pairing)) for t in batch["table"]
        ]
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


def _start_ray(ray, cfg: ScoreConfig, threads: int) -> bool:
    """Join --ray_address or start a local Ray, unless one runs in this process already; whether it was started."""
    import logging

    if ray.is_initialized():
        return False
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
    return True


def _score_ray(
    cfg: ScoreConfig, model_dir: Path, pending: list[Shard], open_output, progress, pairing=None
) -> Iterator:
    import logging

    from finsent.runs.folder import read_model_info

    ray = _import_ray()
    threads = cfg.threads or 1
    started = _start_ray(ray, cfg, threads)
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
            fn_kwargs={"text_column": cfg.text_column, "chunk_size": cfg.chunk_size, "extra": required_columns(cfg)},
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
                "pairing": pairing,
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
