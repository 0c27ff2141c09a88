#!/usr/bin/env python
"""Recipe search on the validation split only: train one configuration on several seeds, report validation scores.

    python bench/tune.py --name "r16, 75Agree extra, 3 ep" --seeds 0 1 2 --set extra_train_agreement=75 num_epochs=3

Each seed is its own stratified 80/10/10 split (the same splits bench/accuracy.py scores). The test split is never
read here: training scores it into the temporary run folder, which this script deletes unread. One row per call is
appended to bench/results/tuning.jsonl and the table bench/results/tuning.md is rewritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from finsent.core import metrics
from finsent.core.errors import FinsentError
from finsent.data.labels import LABELS
from finsent.models import lora
from finsent.runs.folder import read_val_logits
from finsent.training import config as training_args
from finsent.training.config import TrainConfig
from finsent.training.trainer import train


def parse_overrides(pairs: list[str]) -> dict:
    """key=value strings -> TrainConfig keyword arguments, typed like the `finsent train` flags."""
    try:
        return training_args.parse_overrides(pairs)
    except FinsentError as e:
        raise SystemExit(str(e)) from None


def validation_scores(run_dir: Path) -> dict:
    """Accuracy, macro-F1 and ECE (before temperature scaling) from the run's validation logits."""
    val = read_val_logits(run_dir)
    logits, labels = val["logits"], val["labels"]
    m = metrics.classification_metrics(labels, logits.argmax(1), LABELS)
    probs = metrics.softmax(logits)
    ece = metrics.expected_calibration_error(probs.max(1), probs.argmax(1) == labels)
    return {"val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"], "val_ece": ece}


def pooled(rows: list[dict]) -> list[dict]:
    """Calls on more seeds of one configuration (same overrides, same name up to a "(seeds ...)" suffix) as one row,
    each with its paired gain over the first configuration of the file (where the search started) on the seeds both
    have; best gain first."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        name = r["name"].split(" (seeds")[0]
        g = groups.setdefault(
            (name, tuple(r["overrides"])), {"name": name, "seeds": [], "overrides": r["overrides"], "per_seed": []}
        )
        g["seeds"] += r["seeds"]
        g["per_seed"] += r["per_seed"]
    ref = {x["seed"]: x["val_accuracy"] for x in next(iter(groups.values()))["per_seed"]}
    for g in groups.values():
        gains = [x["val_accuracy"] - ref[x["seed"]] for x in g["per_seed"] if x["seed"] in ref]
        g["gain"] = float(np.mean(gains)) if gains else float("nan")
    return sorted(groups.values(), key=lambda g: (np.isnan(g["gain"]), -g["gain"]))


def table(rows: list[dict]) -> list[str]:
    gain = "gain" in rows[0]
    lines = [
        "| configuration | seeds | val accuracy |"
        + (" vs first row, same seeds |" if gain else "")
        + " val macro-F1 | val ECE | train time (s) | epochs run | overrides |",
        "| --- " * (8 + gain) + "|",
    ]
    for r in rows:
        s = r["per_seed"]
        f = lambda k, d=4, s=s: f"{np.mean([x[k] for x in s]):.{d}f} ± {np.std([x[k] for x in s]):.{d}f}"  # noqa: E731
        lines.append(
            f"| {r['name']} | {r['seeds']} | {f('val_accuracy')} |"
            + (f" {r['gain']:+.4f} |" if gain else "")
            + f" {f('val_macro_f1')} | {f('val_ece')} | {f('train_runtime_s', 0)} | {f('epochs_run', 1)} | "
            f"`{' '.join(r['overrides'])}` |"
        )
    return lines


def to_markdown(rows: list[dict]) -> str:
    return (
        "\n".join(
            [
                "Recipe search: validation split only (mean ± std over seeds; each seed its own split). "
                "Made by `bench/tune.py`; the test split is not read.",
                "",
                "Pooled by configuration (calls on more seeds of one configuration together); ranked by the paired difference "
                "in validation accuracy with the first configuration, on the seeds both were run on:",
                "",
                *table(pooled(rows)),
                "",
                "Every call, in order:",
                "",
                *table(rows),
            ]
        )
        + "\n"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--data_path", default="../shared/data/FinancialPhraseBank-v1.0.zip")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="TrainConfig overrides")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)
    overrides = {"use_lora": True, "data_path": args.data_path, **parse_overrides(args.set)}
    recipe = {k: v for k, v in dataclasses.asdict(TrainConfig(**overrides)).items() if k not in ("data_path", "seed")}
    if recipe["use_lora"]:  # the settings themselves, read up front: a --set lora_config path may not outlive the call
        recipe["lora"] = lora.read_lora_config(recipe["lora_config"])
    per_seed = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            run = Path(tmp) / f"s{seed}"
            results = train(
                TrainConfig(**{**overrides, "seed": seed, "output_dir": str(run), "version": f"s{seed}"}),
                log=lambda *a: None,
            )
            row = {
                "seed": seed,
                **validation_scores(run),
                "temperature": results["temperature"],
                "train_runtime_s": results["train_runtime_s"],
                "epochs_run": results["epochs_run"],
            }
            per_seed.append(row)
            print(
                f"{args.name} | seed {seed}: val accuracy {row['val_accuracy']:.4f} macro-F1 {row['val_macro_f1']:.4f} "
                f"ECE {row['val_ece']:.4f} | {row['train_runtime_s']:.0f}s, {row['epochs_run']:.1f} epochs",
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tuning.jsonl", "a", encoding="utf-8") as f:
        f.write(
            json.dumps(
                {
                    "name": args.name,
                    "seeds": args.seeds,
                    "overrides": args.set,
                    "recipe": recipe,  # overrides are
                    "per_seed": per_seed,
                }
            )
            + "\n"
        )  # relative to the defaults of the day; recipe is what ran
    rows = [
        json.loads(line) for line in (out / "tuning.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    md = to_markdown(rows)
    (out / "tuning.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FinsentError as e:  # bad data path or file: one line, no traceback
        sys.exit(f"{Path(__file__).name}: error: {e}")
