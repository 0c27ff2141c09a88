#!/usr/bin/env python
"""Train the all-mpnet-base-v2 teachers on one GPU machine and pack their run folders for the way back.

    python bench/gpu_teachers.py --stash DIR --data FinancialPhraseBank-v1.0.zip --out DIR [--dry_run]   # there
    python bench/gpu_teachers.py --unpack teachers.tar.xz.* --out runs/teachers                          # here

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
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "modules_to_save": ["classifier"]}
CONFIGS = {  # MPNet's linear layers: attention q/k/v/o, intermediate.dense, output.dense; the head is `classifier`
    "all_linear": {**LORA, "target_modules": "all-linear"},
    "attention_only": {**LORA, "target_modules": ["q", "k", "v", "o"]},
}


def plan(dry_run: bool, teacher_lora: str = "all_linear", variants: bool = True) -> list[tuple[str, list[str]]]:
    """(run name, extra `finsent train` flags) for every run; names starting "all-" or "50-" are teachers to keep."""
    if dry_run:
        tiny = ["--max_train_samples", "60", "--max_eval_samples", "40", "--num_epochs", "1", "--max_length", "48"]
        return [
            ("all-s0", ["--use_lora", "--agreement", "all", "--seed", "0", *tiny]),
            ("50-s0", ["--use_lora", "--agreement", "50", "--seed", "0", *tiny]),
        ]
    runs = []
    for s in range(5):
        for level in ("all", "50"):
            runs.append(
                (f"{level}-s{s}", ["--use_lora", "--lora_config", teacher_lora, "--agreement", level, "--seed", str(s)])
            )
    if variants:  # the LoRA-target and full fine-tuning comparisons, on AllAgree
        for s in range(5):
            runs.append(
                (
                    f"attn-all-s{s}",
                    ["--use_lora", "--lora_config", "attention_only", "--agreement", "all", "--seed", str(s)],
                )
            )
        for s in range(3):
            runs.append((f"full-all-s{s}", ["--agreement", "all", "--seed", str(s), "--learning_rate", "3e-5"]))
    return runs


def is_teacher(name: str) -> bool:
    return name.startswith(("all-", "50-"))


def finish(run: Path, data: str, device: str) -> None:
    """A teacher's last step: round its adapter, then cache its logits on every PhraseBank sentence."""
    from finsent.data.corpus import load_data
    from finsent.training.distill import teacher_logits

    round_adapter(run)
    teacher_logits(run, load_data(data, "50").texts, device=device)  # every PhraseBank sentence is in 50Agree


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


def unpack(parts: list[Path], dest: Path) -> None:
    """Here, after the trip back: join the parts, untar, and name the base model by its registry name again."""
    import io

    dest.mkdir(parents=True, exist_ok=True)
    data = b"".join(p.read_bytes() for p in sorted(parts, key=lambda p: p.name))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
        tar.extractall(dest, filter="data")
    for run in sorted(d for d in dest.iterdir() if (d / "finsent_model.json").is_file()):
        for name, keys in (
            ("finsent_model.json", ["model_name"]),
            ("results.json", ["model_name", "config"]),
            ("adapter_config.json", ["base_model_name_or_path"]),
        ):
            path = run / name
            obj = json.loads(path.read_text())
            for key in keys:
                if key == "config":
                    obj["config"]["model_name"] = "all-mpnet-base-v2"
                else:
                    obj[key] = "all-mpnet-base-v2"
            path.write_text(json.dumps(obj, indent=2) + "\n")
        print(f"{run}: base model all-mpnet-base-v2 (`finsent models fetch all-mpnet-base-v2` resolves it)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stash", type=Path)
    p.add_argument("--data")
    p.add_argument("--unpack", type=Path, nargs="+", help="(here) the teachers.tar.xz.NN parts that came back")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/teachers"))
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("--finish", type=Path, help="(internal) the last step of one teacher run")
    p.add_argument("--teacher_lora", default="all_linear", choices=sorted(CONFIGS), help="the teachers' LoRA targets")
    p.add_argument("--no_variants", action="store_true", help="train only the teachers")
    p.add_argument("--parallel", type=int, default=10, help="runs side by side on the one GPU (default: 10)")
    p.add_argument("--deadline_s", type=float, default=420, help="kill runs still going after this (default: 420)")
    args = p.parse_args()
    if args.unpack:
        return unpack(args.unpack, args.out)
    device = "cpu" if args.dry_run else "cuda"
    if args.finish:
        return finish(args.finish, args.data, device)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
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
    for name, config in CONFIGS.items():
        (args.work / f"{name}.json").write_text(json.dumps(config))

    start = time.time()
    queue = sorted(
        plan(args.dry_run, args.teacher_lora, not args.no_variants), key=lambda run: not is_teacher(run[0])
    )  # teachers first
    running: dict[str, tuple[subprocess.Popen, object]] = {}
    while queue or running:
        if queue and len(running) < args.parallel and time.time() - start < args.deadline_s - 150:
            name, flags = queue.pop(0)
            flags = [str(args.work / f"{f}.json") if f in CONFIGS else f for f in flags]
            train = [
                sys.executable,
                str(ROOT / "train.py"),
                "--model_name",
                model,
                "--data_path",
                args.data,
                "--output_dir",
                str(args.work / name),
                "--tracking_uri",
                f"sqlite:///{args.work}/{name}.db",
                *flags,
            ]
            steps = [shlex.join(train)]
            if is_teacher(name):
                finish_cmd = [
                    sys.executable,
                    __file__,
                    "--data",
                    args.data,
                    "--out",
                    str(args.out),
                    "--finish",
                    str(args.work / name),
                ]
                steps.append(shlex.join(finish_cmd + (["--dry_run"] if args.dry_run else [])))
            log = open(args.work / f"{name}.log", "w")  # closed when the run ends
            running[name] = (
                subprocess.Popen(["bash", "-c", " && ".join(steps)], stdout=log, stderr=subprocess.STDOUT, env=env),
                log,
            )
            continue
        if not queue or time.time() - start >= args.deadline_s - 150:
            queue.clear()  # too late to start another run
        for name, (proc, log) in list(running.items()):
            if proc.poll() is None and time.time() - start > args.deadline_s:
                proc.kill()
                proc.wait()
            if proc.poll() is not None:
                log.close()
                del running[name]
                print(f"{name}: exit {proc.returncode} at {time.time() - start:.0f}s", flush=True)
        time.sleep(1)

    rows = []
    for name, _ in plan(args.dry_run, args.teacher_lora, not args.no_variants):
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
                "precision": r["config"].get("precision"),
                "temperature": r.get("temperature"),
            }
        )
    (args.out / "teachers.json").write_text(json.dumps(rows, indent=1))
    for row in rows:
        print(json.dumps(row)[:400])

    keep = [
        n
        for n, _ in plan(args.dry_run, args.teacher_lora, not args.no_variants)
        if is_teacher(n) and (args.work / n / "teacher_logits.npz").is_file()
    ]
    archive = args.work / "teachers.tar.xz"
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        for name in keep:
            tar.add(args.work / name, arcname=name, filter=lambda ti: None if ti.name.endswith("README.md") else ti)
        for name, _ in plan(args.dry_run, args.teacher_lora, not args.no_variants):
            tar.add(args.work / f"{name}.log", arcname=f"logs/{name}.log")
    data = archive.read_bytes()
    step = 15 * 1024 * 1024
    parts = args.work / "parts"
    parts.mkdir(exist_ok=True)
    for i in range(0, len(data), step):
        (parts / f"teachers.tar.xz.{i // step:02d}").write_bytes(data[i : i + step])
    for part in sorted(parts.iterdir())[:3]:  # at most 64 MiB come back per call: the rest on the next call
        (args.out / part.name).write_bytes(part.read_bytes())
    print(
        f"packed {len(keep)} run folders: {len(data) / 1e6:.1f} MB in {len(list(parts.iterdir()))} parts "
        f"in {parts} ({time.time() - start:.0f}s in all)"
    )


if __name__ == "__main__":
    main()
