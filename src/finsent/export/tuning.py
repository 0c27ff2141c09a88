"""`finsent tune-engine` (and the end of `finsent export-onnx`): every engine of finsent.inference.engines that can
run on this CPU is checked against fp32 PyTorch on the run's own held-out sentences (>= 99.5 % equal labels), timed
briefly, and the fastest that agrees (inference.engines.choose: within 5 % of it, the one that agrees most) becomes
the run's default, recorded in export.json (`engine`) with the CPU model,
its flags and every candidate's rate. A run with early exits gets its exit thresholds chosen again on each ONNX
engine its segments run on."""

from __future__ import annotations

import datetime as dt
import gc
import os
import time
from pathlib import Path

import numpy as np

from finsent.core.errors import FinsentError
from finsent.core.hardware import cpu_signature
from finsent.core.logs import LOGGER
from finsent.core.text import sentence_hash
from finsent.export.graphs import _encode, training_data, training_inputs
from finsent.inference.engines import AGREEMENT_GOAL, ENGINES, EXIT_ENGINES, Engine, as_record, choose
from finsent.runs.folder import ONNX_INT8, read_export_info, read_model_info, read_sentences, write_export_info

# How the tuner measures, as data: the held-out sentences it checks (at most), and the seconds it times each engine.
TUNING = {"max_sentences": 1000, "seconds": 2.0, "batch_size": 32}
REFERENCE = "torch-fp32"  # what every engine is checked against; its rate is its reference pass's


def held_out_inputs(model_dir: Path, data_path: str | Path | None, n: int) -> list[str]:
    """The run's validation and test inputs (pairs in the run's format for an entity run), in a fixed order."""
    path, source = training_data(model_dir, data_path)
    texts, inputs = training_inputs(model_dir, path, source)
    seen = read_sentences(model_dir) or {}
    wanted = set(seen.get("val") or ()) | set(seen.get("test") or ())
    held = sorted({x for t, x in zip(texts, inputs) if sentence_hash(t) in wanted}, key=sentence_hash)
    if not held:
        raise FinsentError(
            f"{model_dir}: none of its validation or test sentences are in its training data; pass --data_path with the data it was trained on"
        )
    return held[:n]


def _why_not(e: Engine, export_dir: Path, flags: list[str]) -> str | None:
    if not e.runs_here(flags):
        return f"the CPU has none of {', '.join(e.needs)}"
    if e.file and not (export_dir / e.file).is_file():
        return f"no {e.file} in the export (re-run finsent export-onnx)"
    return None


def measure(folder: Path, e: Engine, texts: list[str], reference: np.ndarray, seconds: float, threads) -> dict:
    """One engine on its folder (the run for torch, the export for ONNX): label agreement with the reference on texts
    (its first pass, also the warm-up), then its rate over repeated passes for about `seconds`; an ONNX engine on two
    cores or more also with two concurrent passes of one thread each (`streams`), and the faster count is kept."""
    from finsent.inference.factory import auto_streams
    from finsent.inference.predictor import Predictor

    counts = sorted({1, auto_streams(e.backend, threads, combined=False)})
    rates: dict[int, float] = {}
    agreement: float | None = None
    for streams in counts:
        predictor = Predictor(
            folder, **e.predictor_kwargs(), num_threads=threads, batch_size=TUNING["batch_size"], streams=streams
        )
        agreed = float((predictor.logits(texts)[0].argmax(1) == reference).mean())  # also the warm-up
        agreement = agreed if agreement is None else min(agreement, agreed)  # the count chosen must pass too
        passes, start = 0, time.perf_counter()
        while passes == 0 or time.perf_counter() - start < seconds:
            predictor.logits(texts)
            passes += 1
        rates[streams] = round(passes * len(texts) / (time.perf_counter() - start), 1)
        del predictor
    best = max(rates, key=rates.get)
    by_streams = {"rate_by_streams": {str(k): v for k, v in rates.items()}} if len(rates) > 1 else {}
    return {"agreement": round(agreement, 6), "sentences_per_s": rates[best], "streams": best, **by_streams}


def tune_engine(
    model_dir: str | Path,
    export_dir: str | Path | None = None,
    data_path: str | Path | None = None,
    names: list[str] | None = None,
    seconds: float = TUNING["seconds"],
    threads: int | None = None,
    goal: float = AGREEMENT_GOAL,
) -> dict:
    """Check and time each engine (all of ENGINES, or `names`) on this CPU; record and return the `engine` block."""
    from finsent.inference.predictor import Predictor

    model_dir = Path(model_dir)
    export_dir = Path(export_dir) if export_dir else model_dir / "onnx"
    if not read_export_info(export_dir):
        raise FinsentError(f"{export_dir}: no export.json; run `finsent export-onnx --model_dir {model_dir}` first")
    texts = held_out_inputs(model_dir, data_path, TUNING["max_sentences"])
    cpu = cpu_signature()
    before = [round(x, 2) for x in os.getloadavg()]
    torch_fp32 = Predictor(model_dir, "torch", num_threads=threads, batch_size=TUNING["batch_size"])
    start = time.perf_counter()
    reference = torch_fp32.logits(texts)[0].argmax(1)  # the fp32 PyTorch labels
    reference_rate = round(len(texts) / (time.perf_counter() - start), 1)
    del torch_fp32
    candidates = []
    for e in [ENGINES[n] for n in (names or ENGINES)]:
        row = as_record(e)
        why_not = _why_not(e, export_dir, cpu["flags"])
        if e.name == REFERENCE:
            row.update(agreement=1.0, sentences_per_s=reference_rate)
        elif why_not is None:
            try:
                folder = export_dir if e.backend == "onnx" else model_dir  # an --output_dir export too
                row.update(measure(folder, e, texts, reference, seconds, threads))
            except FinsentError as error:
                why_not = str(error)
            gc.collect()
        row.update(passed=why_not is None and row["agreement"] >= goal, **({"skipped": why_not} if why_not else {}))
        LOGGER.info("tune-engine: %s", _line(row, goal))
        candidates.append(row)
    best = choose(candidates)
    if best is None:
        raise FinsentError(
            f"{export_dir}: no engine agrees with fp32 PyTorch on >= {goal:.1%} of the held-out sentences"
        )
    record = {
        "chosen": best["name"],
        "cpu": cpu,
        "agreement_goal": goal,
        "sentences": len(texts),
        "seconds_per_engine": seconds,
        "threads": threads or cpu["cores"],
        "loadavg": [before, [round(x, 2) for x in os.getloadavg()]],
        "tuned_at": dt.datetime.now(dt.timezone.utc),
        "candidates": candidates,
    }
    info = read_export_info(export_dir)
    if info.get("early_exit_segments"):
        info["early_exit_segments"]["thresholds_by_engine"] = exit_thresholds(model_dir, export_dir, data_path, threads)
    write_export_info(export_dir, {**info, "engine": record})
    return record


def _line(row: dict, goal: float) -> str:
    if row.get("skipped"):
        return f"{row['name']}: skipped ({row['skipped']})"
    verdict = "passes" if row["passed"] else f"refused (< {goal:.1%})"
    streams = f" ({row['streams']} streams)" if row.get("streams", 1) > 1 else ""
    return (
        f"{row['name']}: {row['sentences_per_s']:.0f} sentences/s{streams}, agreement {row['agreement']:.2%}, {verdict}"
    )


def exit_thresholds(model_dir: Path, export_dir: Path, data_path, threads: int | None) -> dict:
    """The exit thresholds chosen again on each ONNX engine the segments can run on (int8 segments on OpenVINO,
    fp32 segments on OpenVINO in bf16 where the CPU has it), on the sentences `finsent distill` chose them on."""
    from finsent.core.hardware import has_bf16
    from finsent.core.metrics import softmax
    from finsent.export.exits import threshold_texts
    from finsent.inference.backends import OnnxBackend
    from finsent.inference.early_exit import all_logits, choose_thresholds
    from finsent.models.exits import read_spec, segment_files

    spec = read_spec(model_dir)
    texts = threshold_texts(model_dir, data_path)
    if not texts:
        return {}
    max_length = read_model_info(model_dir).max_length
    out = {}
    for name in EXIT_ENGINES:
        e = ENGINES[name]
        if e.precision == "bf16" and not has_bf16():
            continue
        files = [export_dir / f for f in segment_files(len(spec["layers"]), int8=e.file == ONNX_INT8)]
        if not all(f.is_file() for f in files):
            continue
        engines = [OnnxBackend(f, threads, e.runtime, e.precision) for f in files]
        names = engines[0].input_names
        batches = [
            _encode(engines[0].tokenizer, texts[i : i + 32], names, max_length) for i in range(0, len(texts), 32)
        ]
        *exits, final = all_logits([e.outputs for e in engines], batches)
        target = spec["agreement_target"]
        out[name] = {
            "thresholds": choose_thresholds([softmax(e) for e in exits], final.argmax(1), target),
            "sentences": len(texts),
            "agreement_target": target,
        }
    return out
