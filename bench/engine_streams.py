#!/usr/bin/env python
"""A server's small batches on the int8 engine: one stream of N threads against N single-thread streams (issue 26).

    python bench/engine_streams.py --model_dir runs/v1 --threads 2

16 clients that each wait for their answer make batches of about 8 in `finsent serve`; this times OpenVINO on the
run's int8 export (the default engine) at batch 1 to 32 of one mean-length PhraseBank sentence, compiled with one
stream of --threads threads (PERFORMANCE_HINT LATENCY, what predict and score use) and with --threads streams of one
thread each called from as many threads (THROUGHPUT, what `finsent serve --streams` uses). CPU model and the load
average are printed with each row; the table goes to bench/results/engine_streams_<cpu>.md.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np

from finsent.core.hardware import cpu_model

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 representing 7.7 % of net sales ."


def compiled(path: Path, threads: int, streams: int):
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
    config.update(
        {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams} if streams > 1 else {"PERFORMANCE_HINT": "LATENCY"}
    )
    return ov.Core().compile_model(str(path), "CPU", config)


def rate(model, feeds: dict, batch: int, callers: int, seconds: float) -> float:
    """Sentences/s of `callers` threads each running batch after batch on its own infer request for `seconds`."""
    counts = [0] * callers
    stop = time.perf_counter() + seconds

    def work(k: int) -> None:
        request = model.create_infer_request()
        request.infer(feeds)  # warm: this shape's kernels
        while time.perf_counter() < stop:
            request.infer(feeds)
            counts[k] += batch

    threads = [threading.Thread(target=work, args=(k,)) for k in range(callers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model_dir", default="runs/v1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="per cell (default: %(default)s)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from finsent.core.serialization import write_text
    from finsent.inference.factory import export_folder

    folder = export_folder(args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    one = compiled(folder / "model.int8.onnx", args.threads, 1)
    many = compiled(folder / "model.int8.onnx", args.threads, args.threads)
    cpu = cpu_model()
    lines = [
        f"# One stream against {args.threads} streams on OpenVINO int8 ({cpu}, {os.cpu_count()} CPUs)",
        "",
        f"`python bench/engine_streams.py {' '.join(sys.argv[1:])}`; one {len(tokenizer(SENTENCE)['input_ids'])}-token "
        f"sentence repeated, {args.seconds:.0f} s a cell.",
        "",
        f"| batch | 1 stream x {args.threads} threads (sentences/s) | {args.threads} streams x 1 thread | ratio | load before / after |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    print("\n".join(lines), flush=True)
    for batch in args.batches:
        encoded = tokenizer([SENTENCE] * batch, return_tensors="np", padding=True)
        feeds = {i.any_name: encoded[i.any_name].astype(np.int64) for i in one.inputs if i.any_name in encoded}
        before = os.getloadavg()[0]
        a = rate(one, feeds, batch, 1, args.seconds)
        b = rate(many, feeds, batch, args.threads, args.seconds)
        lines.append(f"| {batch} | {a:.0f} | {b:.0f} | {b / a:.2f}x | {before:.2f} / {os.getloadavg()[0]:.2f} |")
        print(lines[-1], flush=True)
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")
    write_text(ROOT / "bench" / "results" / f"engine_streams_{slug}.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
