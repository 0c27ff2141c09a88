#!/usr/bin/env python
"""Batch-scoring benchmark: `finsent score` on N PhraseBank sentences with the local engine and Ray Data at 1 and 2 workers.

    python bench/scale.py --model_dir runs/v1 --data_path ../shared/data/FinancialPhraseBank-v1.0.zip   # 1,000,000

Writes N sentences (every PhraseBank sentence, all agreement levels, repeated in a fixed mixed order) as Parquet
shards, then runs `finsent score` once per engine, each in its own process tree, and measures: rows/s (the job's
own clock, model loading included), the process tree's memory (RSS of the command and every child, Ray's workers
included, sampled every --sample_s seconds: the peak, and the median of the first and the last quarter of the run,
which must be level if memory does not grow with the input), the output row count against the input's, and the
overhead of Ray against the local engine. Ends with what a 100-core Ray cluster would take for 1 billion sentences
at the measured per-core rate. Saves bench/results/scale.md and .json. Not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {
    "local": ("local engine", ["--engine", "local"]),
    "ray1": ("Ray Data, 1 worker", ["--engine", "ray", "--num_workers", "1"]),
    "ray2": ("Ray Data, 2 workers", ["--engine", "ray", "--num_workers", "2"]),
}
CLUSTER_CORES = 100
CLUSTER_SENTENCES = 1_000_000_000


def write_shards(data_path: str, n: int, shards: int, folder: Path) -> None:
    """n sentences over `shards` Parquet files with an id column; each file is built on its own (bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finsent.data.corpus import load_data

    texts = np.array(load_data(data_path, "50").texts, dtype=object)  # 50Agree holds every sentence
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    for k in range(shards):
        ids = np.arange(bounds[k], bounds[k + 1])
        table = pa.table({"id": ids, "text": texts[(ids * 7919) % len(texts)].tolist()})
        pq.write_table(table, folder / f"part-{k:05d}.parquet")


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (Ray's raylet and workers included), in MB."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def run_engine(key: str, args: argparse.Namespace, data: Path, work: Path) -> dict:
    out = work / f"out-{key}"
    cmd = [sys.executable, "-m", "finsent", "score", "--model_dir", args.model_dir, "--input", str(data)]
    cmd += ["--output", str(out), "--backend", args.backend, "--batch_size", str(args.batch_size), "--quiet"]
    cmd += [*ENGINES[key][1], "--threads", str(args.threads if key == "local" else 1)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    samples: list[float] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(args.sample_s):
            samples.append(tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    summary = json.loads((out / "_summary.json").read_text())
    import pyarrow.parquet as pq

    output_rows = sum(pq.read_metadata(p).num_rows for p in out.rglob("*.parquet"))
    quarter = max(1, len(samples) // 4)
    return {
        "engine": key,
        "label": ENGINES[key][0],
        "workers": 1 if key == "local" else int(ENGINES[key][1][-1]),
        "threads_per_worker": args.threads if key == "local" else 1,
        "input_rows": args.n,
        "output_rows": output_rows,
        "rows_per_s": summary["rows_per_s_this_run"],
        "elapsed_s": summary["elapsed_s"],
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(max(samples, default=0.0), 1),
        "rss_first_quarter_mb": round(float(np.median(samples[:quarter])), 1) if samples else None,
        "rss_last_quarter_mb": round(float(np.median(samples[-quarter:])), 1) if samples else None,
        "rss_samples_mb": [round(s, 1) for s in samples],
        "label_counts": summary["label_counts"],
    }


def extrapolate(rows: list[dict]) -> dict | None:
    """1 billion sentences on 100 cores at the best measured per-core rate of the Ray rows (or the local row)."""
    ray_rows = [r for r in rows if r["engine"] != "local"] or rows
    best = max(ray_rows, key=lambda r: r["rows_per_s"] / (r["workers"] * r["threads_per_worker"]))
    per_core = best["rows_per_s"] / (best["workers"] * best["threads_per_worker"])
    if per_core <= 0:
        return None
    seconds = CLUSTER_SENTENCES / (CLUSTER_CORES * per_core)
    return {
        "from": best["label"],
        "per_core_rows_per_s": round(per_core, 2),
        "seconds": seconds,
        "hours": seconds / 3600,
    }


def markdown(rows: list[dict], meta: dict, cluster: dict | None) -> str:
    local = next((r for r in rows if r["engine"] == "local"), None)
    lines = [
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}, {meta['cpus']} CPUs; load average before {meta['loadavg_before']}, after {meta['loadavg_after']}.  ",
        f"Input: {meta['n']:,} PhraseBank sentences (all agreement levels, repeated) in {meta['shards']} Parquet shards; model {meta['model_dir']} ({meta['backend']}), batch size {meta['batch_size']}.",
        "",
        "| engine | workers x threads | rows/s | vs local | peak RSS (MB) | RSS first / last quarter (MB) | output rows = input |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ratio = f"{r['rows_per_s'] / local['rows_per_s']:.0%}" if local and local["rows_per_s"] else ""
        lines.append(
            f"| {r['label']} | {r['workers']} x {r['threads_per_worker']} | {r['rows_per_s']:,.0f} | {ratio} | {r['peak_rss_mb']:,.0f} | "
            f"{r['rss_first_quarter_mb']} / {r['rss_last_quarter_mb']} | {'yes' if r['output_rows'] == r['input_rows'] else 'NO'} ({r['output_rows']:,}) |"
        )
    ray2 = next((r for r in rows if r["engine"] == "ray2"), None)
    if local and ray2 and local["rows_per_s"]:
        share = ray2["rows_per_s"] / local["rows_per_s"]
        lines += [
            "",
            f"Goal: Ray at 2 workers >= 90 % of the local engine's rows/s. Measured {share:.0%}: **{'met' if share >= 0.9 else 'not met'}**.",
        ]
    if cluster:
        lines += [
            "",
            f"On paper, a {CLUSTER_CORES}-core Ray cluster at the measured {cluster['per_core_rows_per_s']:,.1f} rows/s per core "
            f"({cluster['from']}) would score {CLUSTER_SENTENCES:,} sentences in {cluster['hours']:,.1f} hours "
            f"({cluster['seconds'] / 86400:,.2f} days), assuming linear scaling (each actor holds its own model; shards are read "
            "in parallel; the driver only writes the output).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", required=True, help="a training run folder")
    p.add_argument("--data_path", default=str(ROOT.parent / "shared" / "data" / "FinancialPhraseBank-v1.0.zip"))
    p.add_argument("--n", type=int, default=1_000_000, help="sentences to score (default: %(default)s)")
    p.add_argument(
        "--shards", type=int, default=20, help="Parquet files the input is split into (default: %(default)s)"
    )
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of the local engine (default: all)")
    p.add_argument("--sample_s", type=float, default=0.5, help="seconds between memory samples (default: %(default)s)")
    p.add_argument("--workdir", default=None, help="where the shards and outputs go (default: a temp folder)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for scale.md and scale.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        write_shards(args.data_path, args.n, args.shards, work / "in")
        loadavg_before = [round(x, 2) for x in os.getloadavg()]
        rows = []
        for key in args.engines:
            rows.append(run_engine(key, args, work / "in", work))
            print(
                f"{rows[-1]['label']}: {rows[-1]['rows_per_s']:,.0f} rows/s, peak RSS {rows[-1]['peak_rss_mb']:,.0f} MB",
                flush=True,
            )
    meta = {
        "command": "python bench/scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": loadavg_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        **{k: getattr(args, k) for k in ("n", "shards", "model_dir", "backend", "batch_size", "threads")},
    }
    cluster = extrapolate(rows)
    text = markdown(rows, meta, cluster)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.md").write_text(text, encoding="utf-8")
    (out / "scale.json").write_text(json.dumps({"meta": meta, "rows": rows, "cluster": cluster}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
