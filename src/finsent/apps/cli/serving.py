"""`finsent predict`, `finsent serve` and `finsent export-onnx`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from finsent.apps.cli.flags import add_command, from_args
from finsent.apps.configs import ExportOnnxConfig, PredictConfig, ServeConfig, TuneEngineConfig
from finsent.apps.entity_predict import EntityOptions
from finsent.core.errors import FinsentError
from finsent.core.logs import LOGGER
from finsent.inference.factory import TUNED, PredictorOptions


def predictor_for(args: argparse.Namespace, model_dir: str | None = None, streams: int | str | None = TUNED):
    """The one predictor factory, on the command's model flags; says once on stderr which backend it chose."""
    from transformers.utils import logging as hf_logging

    from finsent.inference.factory import build_predictor

    hf_logging.disable_progress_bar()
    predictor = build_predictor(model_dir or args.model_dir, from_args(PredictorOptions, args), streams)
    choice = getattr(predictor, "backend_choice", None) or getattr(
        getattr(predictor, "primary", None), "backend_choice", None
    )
    reason = f" ({choice['reason']})" if choice and choice["requested"] == "auto" else ""
    if reason and LOGGER.isEnabledFor(logging.INFO):  # on stderr: stdout may be the JSON Lines output
        print(f"finsent: backend {predictor.backend_name}{reason}", file=sys.stderr)
    return predictor


def _predict_source(cfg: PredictConfig):
    """The sentences to score: --input, arguments, or stdin."""
    from finsent.apps import predict

    if cfg.input:
        return predict.open_file(cfg.input, cfg.text_column)
    if cfg.texts:
        return predict.open_args(cfg.texts)
    if sys.stdin is None or sys.stdin.isatty():
        raise FinsentError(
            "nothing to score: give sentences as arguments, --input FILE (csv, tsv, json, jsonl, parquet or txt), or pipe them on stdin, one a line"
        )
    return predict.open_stdin()


def cmd_predict(args: argparse.Namespace) -> int:
    from finsent.apps import entity_predict, predict

    cfg = from_args(PredictConfig, args)
    entities = from_args(EntityOptions, args)
    if cfg.texts and cfg.input:
        raise FinsentError("give sentences as arguments or --input FILE, not both")
    extra_runs = [d for d in (args.cascade, args.early_exit_dir) if d and Path(d).is_dir()]
    fmt = entity_predict.check_task(entities, cfg.model_dir, *extra_runs)  # before the model and input are read
    watchlist = entity_predict.load_watchlist(entities, bool(cfg.input)) if fmt is not None else None
    source = _predict_source(cfg)
    pairs = entity_predict.PairCount()
    if fmt is not None:
        source = entity_predict.pair_source(source, fmt, entities, watchlist, pairs)
    predictor = predictor_for(args)
    summary = predict.run(
        predictor,
        source,
        cfg.output,
        cfg.chunk_size,
        show_progress=not cfg.quiet and not cfg.texts,
        raw_csv=cfg.raw_csv,
    )
    _predict_notes(cfg, entities, predictor, summary, pairs.rows if fmt is not None else None)
    return 0


def _predict_notes(cfg: PredictConfig, entities, predictor, summary, input_rows: int | None) -> None:
    """What was scored, and the rows left unscored, one line each on stderr."""
    if cfg.output:
        what = (
            f"{summary.rows} rows"
            if input_rows is None
            else f"{summary.rows} (text, entity) rows from {input_rows} input rows"
        )
        print(
            f"scored {summary.scored} of {what} with {predictor.info.version} ({predictor.backend_name}) -> {cfg.output}",
            file=sys.stderr,
        )
    if summary.empty:
        print(
            f"finsent: note: {summary.empty} rows had an empty {cfg.text_column!r} and were not scored (e.g. {', '.join(summary.empty_where)})",
            file=sys.stderr,
        )
    if summary.no_entity:
        why = (
            f"named no entity of the watchlist {entities.entities}"
            if entities.entities is not None
            else f"had an empty {entities.entity_column!r}"
        )
        print(f"finsent: note: {summary.no_entity} rows {why}; kept once each with empty predictions", file=sys.stderr)
    if summary.truncated:
        print(
            f"finsent: note: {summary.truncated} texts were longer than {predictor.info.max_length} tokens and were truncated (column 'truncated')",
            file=sys.stderr,
        )


def cmd_serve(args: argparse.Namespace) -> int:
    from finsent.apps import server

    cfg = from_args(ServeConfig, args)
    if cfg.sagemaker:
        cfg.model_dir = cfg.model_dir or server.SAGEMAKER_MODEL_DIR
    elif cfg.model_dir is None:
        raise FinsentError("serve needs --model_dir RUN (or --sagemaker to serve /opt/ml/model on 0.0.0.0:8080)")
    host = cfg.host or ("0.0.0.0" if cfg.sagemaker else "127.0.0.1")
    port = cfg.port or (server.sagemaker_port(os.environ) if cfg.sagemaker else 8000)
    api_key = server.read_api_key(cfg.api_key_file, os.environ)
    notice = server.check_exposure(host, api_key, cfg.allow_unauthenticated, cfg.sagemaker)
    if notice:
        print(notice, file=sys.stderr)
    if cfg.log_predictions and Path(cfg.log_predictions).exists() and not Path(cfg.log_predictions).is_dir():
        raise FinsentError(f"--log_predictions {cfg.log_predictions}: not a folder; give a folder for the log files")
    predictor = predictor_for(args, cfg.model_dir, cfg.streams)
    server.serve(
        predictor,
        host=host,
        port=port,
        log_level=args.log_level,
        max_batch_texts=cfg.max_batch_texts,
        max_wait_ms=cfg.max_wait_ms,
        balance_ms=cfg.balance_ms,
        api_key=api_key,
        cors_origins=cfg.cors_origins,
        prediction_log=prediction_log_for(cfg, predictor),
        metrics_public=cfg.metrics_public,
    )
    return 0


def prediction_log_for(cfg: ServeConfig, predictor):
    """The server's prediction log (--log_predictions DIR), or None."""
    if not cfg.log_predictions:
        return None
    from finsent.monitoring.predlog import PredictionLog

    return PredictionLog(
        cfg.log_predictions,
        model_version=predictor.info.version,
        backend=predictor.backend_name,
        labels=list(predictor.labels),
        log_text=cfg.log_text,
    )


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from finsent.export.onnx import export_onnx

    cfg = from_args(ExportOnnxConfig, args)
    hf_logging.disable_progress_bar()
    info = export_onnx(
        cfg.model_dir, cfg.output_dir, quantize=not cfg.no_quantize, data_path=cfg.data_path, tune=not cfg.no_tune
    )
    print(
        f"exported {info['version']} to {info['output_dir']}/: {', '.join(info['files'])} (fp32 max |logit diff| vs PyTorch {info['fp32_max_abs_logit_diff']:.1e})"
    )
    if info.get("engine"):
        print(_engine_line(info["engine"]))
    return 0


def _engine_line(record: dict) -> str:
    chosen = next(c for c in record["candidates"] if c["name"] == record["chosen"])
    streams = f" on {chosen['streams']} streams" if chosen.get("streams", 1) > 1 else ""
    return (
        f"engine for {record['cpu']['model']}: {record['chosen']}{streams}, {chosen['sentences_per_s']:.0f} sentences/s at "
        f"{chosen['agreement']:.2%} agreement with fp32 PyTorch on {record['sentences']} held-out sentences"
    )


def cmd_tune_engine(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from finsent.export.tuning import tune_engine

    cfg = from_args(TuneEngineConfig, args)
    hf_logging.disable_progress_bar()
    record = tune_engine(
        cfg.model_dir, cfg.export_dir, cfg.data_path, cfg.engines or None, seconds=cfg.seconds, threads=cfg.threads
    )
    print(_engine_line(record))
    return 0


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    on = {"parents": [common]}
    predict_help = (
        "score sentences from arguments, stdin or a table (csv, tsv, json, jsonl, parquet, txt); an entity run scores "
        "(text, entity) pairs from --entity_column or a watchlist (--entities)"
    )
    add_command(sub, "predict", predict_help, cmd_predict, PredictConfig, EntityOptions, PredictorOptions, **on)
    serve_help = (
        "HTTP API: POST /predict, /invocations, /analyze, GET /health, /ping, /metadata, /metrics, docs at /docs"
    )
    add_command(sub, "serve", serve_help, cmd_serve, ServeConfig, PredictorOptions, **on)
    export_help = (
        "merge the LoRA adapter, export ONNX, quantize it to int8 into <model_dir>/onnx/ and choose the fastest engine "
        "for this CPU"
    )
    add_command(sub, "export-onnx", export_help, cmd_export_onnx, ExportOnnxConfig, **on)
    tune_help = (
        "choose the fastest engine for this CPU that agrees with fp32 PyTorch (after moving a run to a new machine)"
    )
    add_command(sub, "tune-engine", tune_help, cmd_tune_engine, TuneEngineConfig, **on)
