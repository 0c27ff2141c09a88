#!/usr/bin/env python
"""Cascade benchmark: the distilled student, its teacher and the cascade of the two, on accuracy and throughput.

    python bench/cascade.py --student RUN --teacher RUN [--data_path FinancialPhraseBank-v1.0.zip] [--n 2000]

Accuracy is scored on the student's own test split (its results.json names the level and seed); throughput on --n
PhraseBank sentences of every agreement level, one model after the other in this process, --threads threads, the
load average printed beside each row. The student runs its fastest path (`--backend onnx`, exported here if it is
not yet), the teacher the torch backend, the cascade both: the student scores everything, the teacher re-scores the
sentences whose calibrated margin is below the threshold `finsent distill` chose on validation. Writes
bench/results/cascade.md and .json. Goal (issue 12): cascade accuracy within 0.2 points of the teacher's at >= 3x
the teacher's throughput.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOAL = {"accuracy_gap_points": 0.2, "speedup_vs_teacher": 3.0}


def timed(name: str, predictor, texts: list[str], warmup: int = 32) -> dict:
    """Sentences per second over texts (after scoring the first `warmup` of them), with the load average before and after."""
    if warmup:
        predictor.score(texts[:warmup])
    before = os.getloadavg()
    start = time.perf_counter()
    predictor.score(texts)
    seconds = time.perf_counter() - start
    row = {
        "name": name,
        "n": len(texts),
        "seconds": seconds,
        "sentences_per_s": len(texts) / seconds,
        "loadavg_before": before,
        "loadavg_after": os.getloadavg(),
    }
    print(
        f"{name}: {row['sentences_per_s']:.1f} sentences/s (load {before[0]:.2f} -> {row['loadavg_after'][0]:.2f})",
        file=sys.stderr,
    )
    return row


def save(out: str, result: dict, md: list[str]) -> None:
    """<out>.json and <out>.md, and the table on stdout."""
    from finsent.core.serialization import write_json, write_text

    write_json(Path(out + ".json"), result)
    write_text(Path(out + ".md"), "\n".join(md) + "\n")
    print("\n".join(md))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", required=True, help="a `finsent distill` run folder")
    p.add_argument("--teacher", required=True, help="the teacher run it was distilled from")
    p.add_argument("--data_path", default=str(ROOT.parent / "shared" / "data" / "FinancialPhraseBank-v1.0.zip"))
    p.add_argument("--n", type=int, default=2000, help="sentences for the throughput rows (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "cascade"))
    args = p.parse_args(argv)

    from finsent.data.corpus import load_data
    from finsent.data.splits import split_data
    from finsent.inference.backends import find_onnx
    from finsent.inference.factory import PredictorOptions, build_predictor
    from finsent.runs.folder import read_results

    try:
        find_onnx(args.student)
    except Exception:  # noqa: BLE001 - no export yet: make one
        subprocess.run([sys.executable, "-m", "finsent", "export-onnx", "--model_dir", args.student], check=True)
    data = read_results(args.student)["data"]
    test = split_data(load_data(args.data_path, data["agreement"]), data["seed"]).test
    cascade = build_predictor(
        args.student, PredictorOptions(backend="onnx", threads=args.threads, cascade=args.teacher)
    )
    student, teacher = cascade.student, cascade.teacher

    gold = np.asarray(test.labels)
    accuracy = {}
    for name, predictor in (("student", student), ("teacher", teacher), ("cascade", cascade)):
        accuracy[name] = float((predictor.score(test.texts).probs.argmax(1) == gold).mean())
    test_deferred = cascade.deferred / cascade.scored
    texts = load_data(args.data_path, "50").texts  # every PhraseBank sentence
    texts = (texts * (args.n // len(texts) + 1))[: args.n]
    rows = [
        timed(f"student ({student.backend_name} int8)", student, texts),
        timed("teacher (torch fp32)", teacher, texts),
    ]
    cascade.deferred = cascade.scored = 0
    rows.append(timed("cascade", cascade, texts))
    rows[-1]["deferred_share"] = cascade.deferred / cascade.scored
    speedup = rows[2]["sentences_per_s"] / rows[1]["sentences_per_s"]
    gap = 100 * (accuracy["teacher"] - accuracy["cascade"])
    result = {
        "command": "python bench/cascade.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "student": str(args.student),
        "teacher": str(args.teacher),
        "threshold": cascade.threshold,
        "test_split": {"agreement": data["agreement"], "seed": data["seed"], "n": len(test)},
        "accuracy": accuracy,
        "test_deferred_share": test_deferred,
        "throughput": rows,
        "goal": {
            **GOAL,
            "gap_points": gap,
            "speedup": speedup,
            "met": gap <= GOAL["accuracy_gap_points"] and speedup >= GOAL["speedup_vs_teacher"],
        },
    }
    md = [
        f"Command: `{result['command']}`  ",
        f"Test split: {data['agreement']}Agree seed {data['seed']} ({len(test)} sentences); throughput: {args.n} "
        f"PhraseBank sentences, {args.threads} threads; cascade margin threshold {cascade.threshold:.3f} (chosen on "
        "validation by `finsent distill`).",
        "",
        "| model | test accuracy | sentences/s | load before / after | deferred to the teacher |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row, name in zip(rows, ("student", "teacher", "cascade")):
        deferred = (
            f"{test_deferred:.1%} of test, {row['deferred_share']:.1%} of the throughput set"
            if name == "cascade"
            else ""
        )
        md.append(
            f"| {row['name']} | {accuracy[name]:.4f} | {row['sentences_per_s']:.1f} | "
            f"{row['loadavg_before'][0]:.2f} / {row['loadavg_after'][0]:.2f} | {deferred} |"
        )
    md += [
        "",
        f"- goal: cascade within {GOAL['accuracy_gap_points']} points of the teacher: {gap:+.2f} points "
        f"({'reached' if gap <= GOAL['accuracy_gap_points'] else 'NOT reached'})",
        f"- goal: cascade >= {GOAL['speedup_vs_teacher']}x the teacher's throughput: {speedup:.1f}x "
        f"({'reached' if speedup >= GOAL['speedup_vs_teacher'] else 'NOT reached'})",
    ]
    save(args.out, result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
