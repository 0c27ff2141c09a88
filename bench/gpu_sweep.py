#!/usr/bin/env python
"""MiniLM recipes on the mix of corpora (issue 22), many side by side on one GPU, scored per source on validation.

    python bench/gpu_sweep.py --model_name DIR --data_dir .gpu/data --out "$OUT" --deadline_s 300   # on the GPU
    python bench/gpu_sweep.py --dry_run --out /tmp/sweep                                              # a CPU check

Each recipe is a plain `finsent train` on phrasebank twitter-financial-news sentfin finentity (bf16 on the GPU), one
process per (recipe, seed), all started at once; runs still going at --deadline_s are killed and reported as such.
Every finished run is scored with its own calibrated Predictor on each source's validation split (what a recipe is
chosen on) and test split (Twitter Financial News: its published validation split). A recipe found here is only a
candidate for the CPU default: the CPU figures in bench/results/domains.md come from `bench/domains.py` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from domains import CORPORA, score_sources  # noqa: E402  (bench/domains.py: the mix and its per-source scoring)

RECIPES = {  # name -> extra `finsent train` flags (the default recipe: LoRA, lr 1e-3, 3 epochs, batch 16, 128 tokens)
    "lora-e3": ["--use_lora"],
    "lora-e6": ["--use_lora", "--num_epochs", "6", "--early_stopping_patience", "3"],
    "full-e3": [],
    "full-e5": ["--num_epochs", "5", "--early_stopping_patience", "3"],
    "full-e5-lr5e-5": ["--num_epochs", "5", "--learning_rate", "5e-5", "--early_stopping_patience", "3"],
    "full-e5-ls0.1": ["--num_epochs", "5", "--label_smoothing", "0.1", "--early_stopping_patience", "3"],
    "full-e4-b32-lr2e-4": ["--num_epochs", "4", "--batch_size", "32", "--learning_rate", "2e-4"],
}


def markdown(result: dict) -> str:
    lines = [
        f"# MiniLM recipes on the mix, side by side on one GPU ({result['created_at']})",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['gpu']}; {result['cpus']} CPUs; every run bf16 on the GPU, seeds {result['seeds']}.  ",
        "Accuracy per source, mean over seeds: validation (what a recipe is chosen on) / test. Tweets' test split is",
        "their published validation split (issue 22's goal for the default recipe: >= 88 %).",
        "",
        "| recipe | seeds done | PB val / test | tweets val / test | SEntFiN val / test | FinEntity val / test | train s |",
        "| --- | ---: | --- | --- | --- | --- | ---: |",
    ]
    for name in RECIPES:
        runs = [r for r in result["runs"] if r["recipe"] == name and "scores" in r]
        if not runs:
            lines.append(f"| {name} | 0 | | | | | |")
            continue
        cells = []
        for source in CORPORA:
            v = np.mean([r["scores"]["val"][source]["accuracy"] for r in runs])
            t = np.mean([r["scores"]["test"][source]["accuracy"] for r in runs])
            cells.append(f"{v:.4f} / {t:.4f}")
        secs = np.mean([r["train_runtime_s"] for r in runs])
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {secs:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_name", default="all-MiniLM-L6-v2")
    p.add_argument("--data_dir", default=None, help="where the corpora are (FINSENT_DATA_DIR)")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--deadline_s", type=float, default=300, help="kill runs still going after this")
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_sweep"))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench/results/gpu"))
    p.add_argument("--dry_run", action="store_true", help="on the CPU: two recipes, one seed, 200 texts, 1 epoch")
    args = p.parse_args(argv)
    if args.data_dir:
        os.environ["FINSENT_DATA_DIR"] = str(Path(args.data_dir).resolve())
    device = "cpu" if args.dry_run else "cuda"
    tiny = ["--max_train_samples", "200", "--max_eval_samples", "100", "--num_epochs", "1"] if args.dry_run else []
    recipes = args.recipes[:2] if args.dry_run else args.recipes
    seeds = args.seeds[:1] if args.dry_run else args.seeds
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    procs = {}
    for name in recipes:
        for seed in seeds:
            run = args.work / f"{name}-s{seed}"
            cmd = [sys.executable, "-m", "finsent", "train", "--model_name", args.model_name, "--data_path", *CORPORA]
            cmd += ["--output_dir", str(run), "--seed", str(seed), "--version", run.name]
            cmd += ["--tracking_uri", f"sqlite:///{args.work.resolve()}/{run.name}.db", *RECIPES[name], *tiny]
            log = open(args.work / f"{run.name}.log", "w")
            procs[(name, seed)] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log, run)
    while any(proc.poll() is None for proc, _, _ in procs.values()):
        if time.time() - start > args.deadline_s:
            for proc, _, _ in procs.values():
                proc.kill()
            break
        time.sleep(2)
    print(f"training: {time.time() - start:.0f} s for {len(procs)} runs", flush=True)

    from finsent.data.corpus import load_data
    from finsent.data.splits import split_data

    data = load_data(CORPORA)
    rows = []
    for (name, seed), (proc, log, run) in procs.items():
        proc.wait()
        log.close()
        row = {"recipe": name, "seed": seed, "flags": RECIPES[name], "exit": proc.returncode}
        if (run / "results.json").is_file():
            results = json.loads((run / "results.json").read_text())
            splits = split_data(data, seed)
            scored = score_sources([run], splits, device)
            row.update(
                train_runtime_s=results["train_runtime_s"],
                epochs_run=results["epochs_run"],
                scores={"val": scored["val_per_source"], "test": scored["per_source"]},
            )
        else:
            row["log_tail"] = (args.work / f"{run.name}.log").read_text()[-1500:]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "log_tail"}), flush=True)
    import torch

    result = {
        "created_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python bench/gpu_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else "no GPU (dry run)",
        "cpus": os.cpu_count(),
        "seeds": seeds,
        "runs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_sweep.json").write_text(json.dumps(result, indent=1))
    (args.out / "gpu_sweep.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
