#!/usr/bin/env python
"""File to file against the engine alone (issue 26): does `finsent predict --input` keep up with its Predictor?

    python bench/file_to_file.py --model_dir runs/v1 --n 30000

Writes --n PhraseBank sentences (all agreement levels, repeated, fixed shuffle) to a CSV, then, each in its own
process on the same engine (`--backend auto`: the engine export-onnx tuned for this CPU): the Predictor alone
scoring the list in memory (the engine's own rate, tokenization included), and `finsent predict --input in.csv
--output out.csv` (and .jsonl) end to end, timed whole less the model load measured in the Predictor's process.
Goal: the file-to-file rate >= 90 % of the engine's. CPU model, flags and load average are printed with the table;
results go to bench/results/file_to_file_<cpu>.md/.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from finsent.core.hardware import cpu_flags, cpu_model

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.9


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def engine_alone(model_dir: str, texts: list[str], threads: int | None) -> dict:
    """The Predictor the CLI builds (same factory, same options), timed on the texts in memory."""
    from finsent.inference.factory import PredictorOptions, build_predictor

    t0 = time.perf_counter()
    predictor = build_predictor(model_dir, PredictorOptions(threads=threads))
    load_s = time.perf_counter() - t0
    predictor.score(texts[:1000])  # warm-up
    t0 = time.perf_counter()
    predictor.score(texts)
    seconds = time.perf_counter() - t0
    return {"load_s": load_s, "seconds": seconds, "sentences_per_s": len(texts) / seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--data_path", default=str(ROOT.parent / "shared" / "data" / "FinancialPhraseBank-v1.0.zip"))
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from serving import sentences  # noqa: E402 - the same sentences as bench/serving.py

    texts = sentences(args.data_path, args.n)
    if args.worker:
        print(json.dumps(engine_alone(args.model_dir, texts, args.threads)))
        return 0
    cpu = cpu_model()
    print(f"CPU: {cpu} ({', '.join(cpu_flags())}), {os.cpu_count()} cores; load {load()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.csv"
        with src.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text"])
            writer.writerows(enumerate(texts))
        before = load()
        cmd = [sys.executable, __file__, "--worker", "1", "--model_dir", args.model_dir, "--n", str(args.n)]
        cmd += ["--data_path", args.data_path] + (["--threads", str(args.threads)] if args.threads else [])
        alone = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        rows.append({"path": "Predictor alone (in memory)", **alone, "loadavg": [before, load()]})
        print(f"{rows[-1]['path']}: {alone['sentences_per_s']:.0f}/s; load {rows[-1]['loadavg']}", flush=True)
        for suffix in (".csv", ".jsonl"):
            out = Path(tmp) / f"out{suffix}"
            before = load()
            t0 = time.perf_counter()
            cli = [sys.executable, "-m", "finsent", "predict", "--model_dir", args.model_dir, "--input", str(src)]
            cli += ["--output", str(out)] + (["--threads", str(args.threads)] if args.threads else [])
            subprocess.run(cli, check=True, capture_output=True, text=True)
            total = time.perf_counter() - t0
            seconds = total - alone["load_s"]  # the model load, measured in the Predictor's process
            rate = len(texts) / seconds
            rows.append(
                {
                    "path": f"finsent predict --input in.csv --output out{suffix}",
                    "seconds": seconds,
                    "wall_s": total,
                    "sentences_per_s": rate,
                    "share_of_engine": rate / alone["sentences_per_s"],
                    "loadavg": [before, load()],
                }
            )
            print(
                f"{rows[-1]['path']}: {rate:.0f}/s ({rate / alone['sentences_per_s']:.0%}); load {rows[-1]['loadavg']}"
            )
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")
    out = ROOT / "bench" / "results" / f"file_to_file_{slug}"
    lines = [
        f"# File to file against the engine alone ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"Command: `python bench/file_to_file.py {' '.join(sys.argv[1:])}`  ",
        f"CPU: {cpu} ({', '.join(cpu_flags())}), {os.cpu_count()} cores. {args.n} PhraseBank sentences; the engine "
        "export-onnx tuned for this CPU (--backend auto). The CLI's time is its wall time less the model load "
        "measured in the Predictor's process (process start is counted against the CLI).",
        "",
        "| path | sentences/s | share of the engine's rate | load avg before / after |",
        "| --- | ---: | ---: | --- |",
    ]
    for r in rows:
        share = f"{r['share_of_engine']:.0%}" if "share_of_engine" in r else ""
        lines.append(f"| {r['path']} | {r['sentences_per_s']:.0f} | {share} | {r['loadavg'][0]} / {r['loadavg'][1]} |")
    worst = min(r["share_of_engine"] for r in rows[1:])
    lines += [
        "",
        f"Goal: file to file >= {GOAL:.0%} of the engine's rate: **{'met' if worst >= GOAL else 'not met'}** ({worst:.0%}).",
        "",
    ]
    from finsent.core.serialization import write_json, write_text

    write_json(out.with_suffix(".json"), {"cpu": cpu, "flags": cpu_flags(), "n": args.n, "rows": rows})
    write_text(out.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
