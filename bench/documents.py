#!/usr/bin/env python
"""Long-document benchmark: `finsent analyze` on a 2,000-sentence document, and --ask over a 100,000-sentence index.

    python bench/documents.py --model_dir runs/v1 --data_path ../shared/data/FinancialPhraseBank-v1.0.zip

1. Writes a Markdown document of --sentences PhraseBank sentences (a section every 100, paragraphs of 5) and times
   `finsent analyze DOC --model_dir RUN --output report.json` end to end in a fresh process: Python start, model
   load, extraction, segmentation, scoring, aggregates and the report (goal: <= 10 s for 2,000 sentences). The same
   with one --ask question (the sentence encoder loads and embeds every sentence) is timed too, for information.
2. Writes a corpus of --index_sentences sentences (files of 1,000), times `finsent index` on it, then loads the index,
   the encoder and the model once and times each of --questions questions through the same code as
   `finsent analyze --index DIR --ask`: embed the question, search the faiss index, score the top 5 sentences
   (goal: <= 100 ms a question, checked on the 95th percentile).
Writes bench/results/documents.md and .json. Not a test: the numbers depend on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOAL = {"document_s": 10.0, "question_ms_p95": 100.0}
QUESTIONS = [
    "What does the company expect for next year?",
    "Did operating profit fall?",
    "Were jobs cut?",
    "How did net sales develop?",
    "Is there a dividend proposal?",
    "Which contracts were signed?",
    "What happened to the share price?",
    "Did the company make an acquisition?",
    "How large was the order intake?",
    "Were there any plant closures?",
]


def sentences(data_path: str, n: int, seed: int = 0) -> list[str]:
    """n well-formed PhraseBank sentences (capitalised, ending with a period), repeated and shuffled with a fixed seed."""
    from finsent.data.corpus import load_data

    texts = [t for t in load_data(data_path, "50").texts if t[0].isupper() and t.endswith(".")]
    order = np.random.default_rng(seed).permutation(len(texts) * -(-n // len(texts)))[:n]
    return [texts[i % len(texts)] for i in order]


def markdown(texts: list[str], title: str) -> str:
    """A section every 100 sentences, a paragraph every 5."""
    parts = [f"# {title}\n"]
    for start in range(0, len(texts), 100):
        parts.append(f"\n## Part {start // 100 + 1}\n")
        for p in range(start, min(start + 100, len(texts)), 5):
            parts.append("\n" + " ".join(texts[p : min(p + 5, start + 100, len(texts))]) + "\n")
    return "".join(parts)


def finsent(*args: str) -> float:
    """Run `finsent ARGS` in a fresh process; wall-clock seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "finsent", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"finsent {' '.join(args[:2])} failed: {proc.stderr.strip()[-2000:]}")
    return elapsed


def bench_document(model_dir: str, data_path: str, n: int, threads: int, work: Path) -> dict:
    doc = work / "document.md"
    doc.write_text(markdown(sentences(data_path, n), f"{n} PhraseBank sentences"), encoding="utf-8")
    report = work / "report.json"
    common = [str(doc), "--model_dir", model_dir, "--threads", str(threads), "--output", str(report)]
    seconds = finsent("analyze", *common)
    found = len(json.loads(report.read_text())["documents"][0]["sentences"])
    with_question = finsent("analyze", *common, "--ask", QUESTIONS[0])
    out = {
        "sentences": n,
        "sentences_found": found,
        "seconds": round(seconds, 2),
        "seconds_with_ask": round(with_question, 2),
    }
    if (Path(model_dir) / "onnx").is_dir():  # the run's int8 export, as `finsent export-onnx` writes it
        out["seconds_onnx"] = round(finsent("analyze", *common, "--backend", "onnx"), 2)
    return out


def bench_index(model_dir: str, data_path: str, n: int, n_questions: int, threads: int, work: Path) -> dict:
    corpus = work / "corpus"
    corpus.mkdir()
    texts = sentences(data_path, n, seed=1)
    for i, start in enumerate(range(0, n, 1000)):
        (corpus / f"doc{i:04d}.md").write_text(markdown(texts[start : start + 1000], f"document {i}"), encoding="utf-8")
    index_dir = work / "index"
    build_s = finsent("index", str(corpus), "--output", str(index_dir), "--threads", str(threads), "--quiet")

    import torch

    from finsent.documents.analysis import ask_index
    from finsent.documents.retrieval import CorpusIndex, Encoder
    from finsent.inference.factory import PredictorOptions, build_predictor

    torch.set_num_threads(threads)
    start = time.perf_counter()
    index = CorpusIndex.load(index_dir)
    encoder = Encoder(num_threads=threads)
    predictor = build_predictor(model_dir, PredictorOptions(backend="torch", threads=threads))
    load_s = time.perf_counter() - start
    ask_index(predictor, index, [QUESTIONS[0]], 5, encoder)  # warm-up
    times = []
    for q in range(n_questions):
        start = time.perf_counter()
        report = ask_index(predictor, index, [QUESTIONS[q % len(QUESTIONS)]], 5, encoder)
        times.append((time.perf_counter() - start) * 1000)
        assert len(report["evidence"][0]["sentences"]) == 5
    ms = np.array(times)
    return {
        "sentences": len(index.rows),
        "documents": len(index.manifest["documents"]),
        "build_s": round(build_s, 1),
        "load_s": round(load_s, 2),
        "questions": n_questions,
        "question_ms": {
            k: round(float(v), 1)
            for k, v in (("mean", ms.mean()), ("p50", np.median(ms)), ("p95", np.percentile(ms, 95)), ("max", ms.max()))
        },
    }


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), platform.machine())


def report_markdown(r: dict) -> str:
    d, x = r["document"], r["index"]
    ok = {True: "yes", False: "**no**"}
    return "\n".join(
        [
            "# finsent analyze benchmark",
            "",
            f"{r['created_at']}, {r['machine']['cpu']}, {r['threads']} threads, load average before {r['load_before']}.",
            "",
            "| measure | value | goal | met |",
            "| --- | --- | --- | --- |",
            f"| `finsent analyze` on a {d['sentences']:,}-sentence document, end to end incl. model load | {d['seconds']} s | <= {GOAL['document_s']} s | {ok[d['seconds'] <= GOAL['document_s']]} |",
            f"| the same with one `--ask` question (sentence encoder + embedding every sentence) | {d['seconds_with_ask']} s | | |",
            *(
                [
                    f"| the same document on the int8 ONNX backend (`--backend onnx`) | {d['seconds_onnx']} s | "
                    f"<= {GOAL['document_s']} s | {ok[d['seconds_onnx'] <= GOAL['document_s']]} |"
                ]
                if "seconds_onnx" in d
                else []
            ),
            f"| `finsent index` over {x['sentences']:,} sentences in {x['documents']} files | {x['build_s']} s | | |",
            f"| loading the index, the encoder and the model | {x['load_s']} s | | |",
            f"| `--ask` over the index, per question: mean / p50 / p95 / max ({x['questions']} questions) | {x['question_ms']['mean']} / {x['question_ms']['p50']} / {x['question_ms']['p95']} / {x['question_ms']['max']} ms | p95 <= {GOAL['question_ms_p95']} ms | {ok[x['question_ms']['p95'] <= GOAL['question_ms_p95']]} |",
            "",
            f"Sentences found by segmentation in the document: {d['sentences_found']:,} of {d['sentences']:,}.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model_dir", default="runs/v1")
    ap.add_argument("--data_path", default=str(ROOT.parent / "shared" / "data" / "FinancialPhraseBank-v1.0.zip"))
    ap.add_argument("--sentences", type=int, default=2000, help="sentences in the document (default: %(default)s)")
    ap.add_argument(
        "--index_sentences", type=int, default=100_000, help="sentences in the index (default: %(default)s)"
    )
    ap.add_argument("--questions", type=int, default=50, help="questions timed over the index (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "documents"))
    args = ap.parse_args(argv)
    import datetime as dt

    from finsent.core.serialization import write_json, write_text

    result = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
        "threads": args.threads,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "goal": GOAL,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result["document"] = bench_document(args.model_dir, args.data_path, args.sentences, args.threads, work)
        result["index"] = bench_index(
            args.model_dir, args.data_path, args.index_sentences, args.questions, args.threads, work
        )
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    md = report_markdown(result)
    write_text(out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
