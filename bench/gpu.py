#!/usr/bin/env python
"""Throughput of the torch GPU path on PhraseBank sentences, beside the transformers pipeline and the tokenizer alone.

    python bench/gpu.py --model_dir runs/gpu1 --data_path .gpu/FinancialPhraseBank-v1.0.zip --out "$OUT"

Rows, one process, in order: the fast tokenizer alone (one call over all sentences, TOKENIZERS_PARALLELISM as the
CLI sets it: false), the Predictor's tokenization (chunks on its thread pool), the transformers pipeline (batch 64,
bf16/fp16 like finsent, on --pipeline_n sentences), and finsent's Predictor on --device for each --batch_sizes
(length-sorted batches, tokenization overlapped with the GPU, pinned memory). Labels of the first 2,000 sentences
are compared with fp32 on the CPU. Writes gpu.md and gpu.json into --out. Run by bench/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 20_000
N_AGREEMENT = 2000


def phrasebank_sentences(data_path: str, n: int) -> list[str]:
    """bench/serving.py's sentences: every PhraseBank sentence, repeated and shuffled with a fixed seed."""
    spec = importlib.util.spec_from_file_location("bench_serving", ROOT / "bench" / "serving.py")
    serving = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serving)
    return serving.sentences(data_path, n)


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def machine(device: str) -> dict:
    import tokenizers
    import torch
    import transformers

    info = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM"),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["dtype"] = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--data_path", default=str(ROOT / ".gpu" / "FinancialPhraseBank-v1.0.zip"))
    ap.add_argument("--n", type=int, default=200_000, help="sentences timed (default: %(default)s)")
    ap.add_argument(
        "--pipeline_n", type=int, default=50_000, help="sentences for the pipeline row (default: %(default)s)"
    )
    ap.add_argument("--batch_sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench" / "results" / "gpu"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as the finsent CLI runs
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from finsent.core.serialization import write_json, write_text
    from finsent.inference.backends import torch_device
    from finsent.inference.factory import PredictorOptions, build_predictor
    from finsent.models.loading import load_trained
    from finsent.runs.folder import read_model_info

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    texts = phrasebank_sentences(args.data_path, args.n)
    max_length = read_model_info(args.model_dir).max_length
    rows = []

    def row(name: str, n: int, seconds: float, **extra) -> None:
        rows.append({"name": name, "n": n, "seconds": seconds, "sentences_per_s": n / seconds, **extra})
        print(f"{name}: {n / seconds:,.0f} sentences/s ({n} in {seconds:.2f} s)", file=sys.stderr, flush=True)

    predictor = build_predictor(
        args.model_dir, PredictorOptions(backend="torch", batch_size=args.batch_sizes[0], device=args.device)
    )
    tokenizer = predictor.tokenizer
    tokenizer(texts[:256], truncation=True, max_length=max_length)
    seconds, enc = timed(lambda: tokenizer(texts, truncation=True, max_length=max_length))
    row("fast tokenizer alone, one call", len(texts), seconds)
    tokens = sum(map(len, enc["input_ids"]))
    seconds, _ = timed(lambda: list(predictor.encode_chunks(texts)))
    row(f"tokenization, Predictor chunks on {predictor.tokenizer_threads} threads", len(texts), seconds)

    _, dtype = torch_device(args.device)
    model, _ = load_trained(args.model_dir)
    clf = pipeline("text-classification", model=model.to(dtype), tokenizer=tokenizer, device=args.device)
    sub = texts[: args.pipeline_n]
    clf(sub[:256], batch_size=64, truncation=True, max_length=max_length)
    seconds, _ = timed(lambda: clf(sub, batch_size=64, truncation=True, max_length=max_length))
    row("transformers pipeline, batch_size=64", len(sub), seconds)

    reference = (
        build_predictor(args.model_dir, PredictorOptions(backend="torch")).score(texts[:N_AGREEMENT]).probs.argmax(1)
    )  # fp32 on the CPU
    for batch_size in args.batch_sizes:
        predictor.batch_size = batch_size
        predictor.score(texts[:4096])  # warm-up: kernels for the shapes, the allocator's pools
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds, scores = timed(predictor.score, texts)
        agreement = float((scores.probs[:N_AGREEMENT].argmax(1) == reference).mean())
        row(f"finsent torch {args.device}, batch {batch_size}", len(texts), seconds, agreement_with_cpu_fp32=agreement)

    result = {
        "created_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python bench/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(args.device),
        "model_dir": str(args.model_dir),
        "max_length": max_length,
        "mean_tokens": tokens / len(texts),
        "rows": rows,
        "goal_sentences_per_s": GOAL,
    }
    out = Path(args.out)
    write_json(out / "gpu.json", result)
    write_text(out / "gpu.md", markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    m = result["machine"]
    best = max((r["sentences_per_s"] for r in result["rows"] if r["name"].startswith("finsent")), default=0)
    lines = [
        f"# GPU throughput ({result['created_at']})",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m.get('gpu', 'no GPU')} ({m.get('dtype', 'fp32')}), {m['cpus']} CPUs; torch {m['torch']}, "
        f"transformers {m['transformers']}, tokenizers {m['tokenizers']}; TOKENIZERS_PARALLELISM={m['TOKENIZERS_PARALLELISM']}.  ",
        f"Sentences: PhraseBank, all agreement levels, repeated; mean {result['mean_tokens']:.1f} tokens, max_length "
        f"{result['max_length']}.",
        "",
        "| what | sentences | seconds | sentences/s | labels = CPU fp32 (first 2,000) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        agree = f"{r['agreement_with_cpu_fp32']:.2%}" if "agreement_with_cpu_fp32" in r else ""
        lines.append(f"| {r['name']} | {r['n']} | {r['seconds']:.2f} | {r['sentences_per_s']:,.0f} | {agree} |")
    lines += [
        "",
        f"Goal: >= {result['goal_sentences_per_s']:,} sentences/s on one GPU; best finsent row {best:,.0f}: "
        f"**{'met' if best >= result['goal_sentences_per_s'] else 'not met'}**.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
