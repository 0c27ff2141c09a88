#!/usr/bin/env python
"""Train the all-mpnet-base-v2 teachers on one GPU machine and pack their run folders for the way back.

    python bench/gpu_teachers.py --stash DIR --data FinancialPhraseBank-v1.0.zip --out DIR [--dry_run]

DIR of --stash holds `mpnet/` from `bench/pack_weights.py pack` (the weights travel as fp16 chunks). Every run is a
plain `finsent train` (bf16 on the GPU); they run side by side on the one GPU. Afterwards each LoRA adapter is
rounded to fp16 precision (so it can travel compressed and arrive byte for byte) and the teacher's logits on every
PhraseBank sentence are computed with the rounded adapter into the run's distillation cache, so `finsent distill`
on a CPU finds them. --dry_run does the same on the CPU with the packaged MiniLM and tiny runs (a check of this script).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ATTENTION_ONLY = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "target_modules": ["q", "k", "v", "o"]}


def plan(dry_run: bool) -> list[tuple[str, list[str]]]:
    """(run name, extra `finsent train` flags) for every run."""
    if dry_run:
        tiny = ["--max_train_samples", "60", "--max_eval_samples", "40", "--num_epochs", "1", "--max_length", "48"]
        return [
            ("all-s0", ["--use_lora", "--agreement", "all", "--seed", "0", *tiny]),
            ("50-s0", ["--use_lora", "--agreement", "50", "--seed", "0", *tiny]),
        ]
    runs = []
    for s in range(5):
        runs.append((f"all-s{s}", ["--use_lora", "--agreement", "all", "--seed", str(s)]))
        runs.append((f"50-s{s}", ["--use_lora", "--agreement", "50", "--seed", str(s)]))
        runs.append(
            (
                f"attn-all-s{s}",
                ["--use_lora", "--lora_config", "ATTENTION_ONLY", "--agreement", "all", "--seed", str(s)],
            )
        )
    for s in range(3):
        runs.append((f"full-all-s{s}", ["--agreement", "all", "--seed", str(s), "--learning_rate", "3e-5"]))
    return runs


def round_adapter(run: Path) -> None:
    """Store the adapter's weights at fp16 precision (as fp32): they then compress well and arrive byte for byte."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = run / "adapter_model.safetensors"
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k).half().float() for k in f.keys()}
    save_file(tensors, path, metadata=meta)


def val_accuracy(run: Path) -> float | None:
    path = run / "val_logits.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        return float((z["logits"].argmax(1) == z["labels"]).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stash", type=Path)
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/teachers"))
    p.add_argument("--dry_run", action="store_true")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    }  # many runs share the GPU machine's cores: the GPU does the arithmetic
    if args.dry_run:
        model = "all-MiniLM-L6-v2"
    else:
        model = str(args.work / "all-mpnet-base-v2")
        subprocess.run(
            [sys.executable, str(ROOT / "bench/pack_weights.py"), "restore", str(args.stash / "mpnet"), model],
            check=True,
        )
    attention_only = args.work / "lora_attention_only.json"
    attention_only.write_text(json.dumps(ATTENTION_ONLY))

    start = time.time()
    procs = {}
    for name, flags in plan(args.dry_run):
        flags = [str(attention_only) if f == "ATTENTION_ONLY" else f for f in flags]
        cmd = [
            sys.executable,
            str(ROOT / "train.py"),
            "--model_name",
            model,
            "--data_path",
            args.data,
            "--output_dir",
            str(args.work / name),
            "--tracking_uri",
            f"sqlite:///{args.work}/mlruns.db",
            *flags,
        ]
        log = open(args.work / f"{name}.log", "w")  # closed after wait
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    for name, (proc, log) in procs.items():
        proc.wait()
        log.close()
        print(f"{name}: exit {proc.returncode} at {time.time() - start:.0f}s", flush=True)

    sys.path.insert(0, str(ROOT / "src"))
    from finsent.data import load_data
    from finsent.distill import teacher_logits

    everything = load_data(args.data, "50").texts  # every PhraseBank sentence is in the 50Agree file
    rows = []
    for name, _ in plan(args.dry_run):
        run = args.work / name
        results = run / "results.json"
        if not results.is_file():
            rows.append({"run": name, "error": (args.work / f"{name}.log").read_text()[-2000:]})
            continue
        r = json.loads(results.read_text())
        rows.append(
            {
                "run": name,
                "test_accuracy": r["accuracy"],
                "test_macro_f1": r["macro_f1"],
                "val_accuracy": val_accuracy(run),
                "train_runtime_s": r["train_runtime_s"],
                "epochs_run": r.get("epochs_run"),
                "device": r["config"].get("device"),
            }
        )
        if (run / "adapter_model.safetensors").is_file():
            round_adapter(run)
            t = time.time()
            teacher_logits(run, everything, device="cpu" if args.dry_run else "cuda")
            rows[-1]["logits_s"] = round(time.time() - t, 1)
    (args.out / "teachers.json").write_text(json.dumps(rows, indent=1))
    for row in rows:
        print(json.dumps(row)[:400])

    keep = [name for name, _ in plan(args.dry_run) if (args.work / name / "adapter_model.safetensors").is_file()]
    archive = args.work / "teachers.tar.xz"
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        for name in keep:
            tar.add(args.work / name, arcname=name, filter=lambda ti: None if "/checkpoints" in ti.name else ti)
        for name, _ in plan(args.dry_run):
            tar.add(args.work / f"{name}.log", arcname=f"logs/{name}.log")
    data = archive.read_bytes()
    step = 15 * 1024 * 1024
    for i in range(0, len(data), step):
        (args.out / f"teachers.tar.xz.{i // step:02d}").write_bytes(data[i : i + step])
    print(
        f"packed {len(keep)} run folders: {len(data) / 1e6:.1f} MB in {(len(data) + step - 1) // step} parts "
        f"({time.time() - start:.0f}s in all)"
    )


if __name__ == "__main__":
    main()
