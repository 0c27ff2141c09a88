"""Beyond PhraseBank (issue 22): models trained on PhraseBank alone against models trained on the mix of every corpus,
each scored on every source's test split of the same seed (one column per source).

    python bench/domains.py --rows minilm-pb minilm-mix --seeds 0
    python bench/domains.py --rows teacher-mix student-mix --seeds 0 --max_length 64
    python bench/domains.py --ensemble teacher-mix-full-bf16 teacher-mix-full-bf16-e3   # two finished runs, averaged

Each row trains real finsent runs (`finsent train` / `finsent distill`, the default recipe unless the row says
otherwise) into --work_dir/<row>-s<seed> (a finished run is reused), then scores the test split of the mix with the
run's own Predictor: PhraseBank's test split inside the mix is the one PhraseBank alone gets with the same seed
(checked), and Twitter Financial News's is its published validation split. Choices (caps, weights, epochs) are made
on validation only; test is scored once per run. The table prints the CPU model and the load average before and
after each run; train time is the Trainer's wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from finsent.core import metrics
from finsent.core.hardware import cpu_model
from finsent.core.serialization import write_json, write_text
from finsent.data.corpus import load_data
from finsent.data.labels import LABELS
from finsent.data.splits import split_data
from finsent.inference.factory import PredictorOptions, build_predictor
from finsent.runs.folder import read_results
from finsent.training.config import PACKAGED_CONFIG_DIR, TrainConfig
from finsent.training.distill import DistillConfig
from finsent.training.trainer import train

CORPORA = ["phrasebank", "twitter-financial-news", "sentfin", "finentity"]
MPNET = "all-mpnet-base-v2"
# row -> (training data, TrainConfig overrides, DistillConfig overrides with the teacher's row, or None)
ROWS = {
    "minilm-pb": (["phrasebank"], {"use_lora": True}, None),
    "minilm-mix": (CORPORA, {"use_lora": True}, None),
    "minilm-mix-full": (CORPORA, {"use_lora": False}, None),  # full fine-tuning, lr 1e-4
    "teacher-pb": (["phrasebank"], {"use_lora": True, "model_name": MPNET, "lora_config": "lora_attention.json"}, None),
    "teacher-mix": (CORPORA, {"use_lora": True, "model_name": MPNET, "lora_config": "lora_attention.json"}, None),
    # every weight free, at the learning rate base-size encoders are fine-tuned with
    "teacher-mix-full": (CORPORA, {"use_lora": False, "model_name": MPNET, "learning_rate": 3e-5}, None),
    "student-mix": (CORPORA, {"use_lora": True}, {"teacher": "teacher-mix", "unlabeled_agreement": "50"}),
    # full fine-tuning (19 min on the mix against LoRA's 21) and no unlabeled pool: the 20-minute budget on 2 cores
    "student-mix-full": (CORPORA, {"use_lora": False}, {"teacher": "teacher-mix", "unlabeled_agreement": "none"}),
}
GOALS = {  # issue 22: accuracy on each source's test split
    "teacher-mix": {"twitter-financial-news": 0.91, "phrasebank": 0.975},
    "student-mix": {"twitter-financial-news": 0.89, "phrasebank": 0.96},
    "minilm-mix": {"twitter-financial-news": 0.88, "phrasebank": 0.945},
}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def config_for(row: str, seed: int, out: Path, args) -> tuple[TrainConfig, DistillConfig | None]:
    data, overrides, distill_overrides = ROWS[row]
    overrides = dict(overrides)
    if "lora_config" in overrides:
        overrides["lora_config"] = str(PACKAGED_CONFIG_DIR / overrides["lora_config"])
    data = [args.mix] if args.mix and data == CORPORA else data
    cfg = TrainConfig(
        data_path=data,
        seed=seed,
        output_dir=str(out),
        version=f"{row}-s{seed}",
        max_length=args.max_length,
        num_epochs=args.num_epochs,
        precision=args.precision,
        tracking_uri=f"sqlite:///{args.work_dir.resolve()}/mlruns.db",
        **overrides,
    )
    distill = None
    if distill_overrides is not None:
        teacher = args.work_dir / f"{distill_overrides['teacher']}{args.teacher_tag}-s{seed}"
        distill = DistillConfig(**{**distill_overrides, "teacher": str(teacher)})
    return cfg, distill


def score_sources(runs: list[Path], splits, device: str = "cpu") -> dict:
    """Each source's accuracy, macro-F1 (and ECE on test) on the test and validation splits (what choices are made
    on) of the mean probability of one run or more (an ensemble), each run loaded once, its own Predictor
    (calibrated; torch on --device)."""
    predictors = [build_predictor(run, PredictorOptions(backend="torch", device=device)) for run in runs]
    scored = {}
    for key, part, names in (
        ("per_source", splits.test, ("accuracy", "macro_f1", "ece")),
        ("val_per_source", splits.val, ("accuracy", "macro_f1")),
    ):
        probs = np.mean([p.score(part.texts).probs for p in predictors], axis=0)
        per_source = metrics.per_source_metrics(part.labels, probs, part.sources, LABELS)
        scored[key] = {k: {m: v[m] for m in names} for k, v in per_source.items()}
    return scored


def onnx_cell(rows: list[dict], key: str) -> str:
    """The mean ONNX rate of a row's seeds and the engines that gave it, for the table."""
    rates = [r[key] for r in rows if r.get(key)]
    engines = ", ".join(sorted({r["onnx_engine"] for r in rows if r.get("onnx_engine")}))
    return f"{np.mean(rates):,.0f} ({engines})" if rates else ""


def onnx_rate(run: Path, texts: list[str], repeats: int = 3) -> tuple[float, str]:
    """(texts/s, engine name) of the run's ONNX export on the engine export-onnx tuned for this CPU (int8 or bf16;
    exported and tuned here if it is not), best of a few passes over texts."""
    from finsent.export.onnx import export_onnx

    if not (run / "onnx" / "model.int8.onnx").is_file():
        export_onnx(run)
    predictor = build_predictor(run, PredictorOptions(backend="onnx"))
    predictor.score(texts[:64])  # warm up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.score(texts)
        rates.append(len(texts) / (time.perf_counter() - start))
    return max(rates), json.loads((run / "onnx" / "export.json").read_text())["engine"]["chosen"]


def read_rows(saved: Path) -> list[dict]:
    """The rows a benchmark saved earlier; rows from before the CPU and precision were recorded get the file's CPU."""
    earlier = json.loads(saved.read_text()) if saved.is_file() else {"rows": []}
    return [{"cpu": earlier.get("cpu"), "precision": "fp32", **r} for r in earlier["rows"]]


def run_row(row: str, seed: int, args, splits) -> dict:
    out = args.work_dir / f"{row}{args.tag}-s{seed}"
    before = load()
    if not (out / "results.json").is_file():
        cfg, distill = config_for(row, seed, out, args)
        train(cfg, distill=distill)
    results = read_results(out)
    scored = score_sources([out], splits)
    after = load()
    rate, engine = onnx_rate(out, splits.test.texts) if args.int8 else (None, None)
    return {
        "row": row + args.tag,
        "mix": args.mix and Path(args.mix).read_text(),
        "seed": seed,
        "run": str(out),
        "train_runtime_s": results["train_runtime_s"],
        "epochs_run": results["epochs_run"],
        "n_train": results["n_train"],
        "val_macro_f1": results["best_val_macro_f1"],
        **scored,
        "loadavg_before": before,
        "loadavg_after": after,
        "int8_per_s": rate,
        "onnx_engine": engine,
        "loadavg_after_int8": load() if rate else None,
        "config": {k: results["config"].get(k) for k in ("model_name", "use_lora", "max_length", "num_epochs", "lr")},
        "cpu": cpu_model(),
        "precision": results["config"].get("precision", "fp32"),
    }


def ensemble_row(rows: list[str], seed: int, args, splits) -> dict:
    """The mean of finished runs' probabilities (an ensemble teacher), scored like a row; nothing is trained."""
    runs = [args.work_dir / f"{row}-s{seed}" for row in rows]
    missing = [str(run) for run in runs if not (run / "results.json").is_file()]
    if missing:
        raise SystemExit(f"--ensemble: no finished run in {', '.join(missing)}; train those rows first")
    before = load()
    scored = score_sources(runs, splits)
    results = [read_results(run) for run in runs]
    return {
        "row": "+".join(rows),
        "seed": seed,
        "run": " + ".join(map(str, runs)),
        "train_runtime_s": sum(r["train_runtime_s"] for r in results),
        **scored,
        "loadavg_before": before,
        "loadavg_after": load(),
        "cpu": cpu_model(),
        "precision": "+".join(dict.fromkeys(r["config"].get("precision", "fp32") for r in results)),
    }


def to_markdown(rows: list[dict], cpu: str) -> str:
    lines = [
        f"# Beyond PhraseBank: test accuracy per source ({os.cpu_count()} cores; this run on {cpu})",
        "",
        "`python bench/domains.py`: each row a real finsent run per seed, scored on every source's test split of the "
        "same seed (Twitter Financial News: its published validation split). Mean over seeds (± their standard "
        "deviation); macro-F1 in brackets.",
        "",
        "| row | seeds | "
        + " | ".join(CORPORA)
        + " | train time per run (s) | CPU, training precision | ONNX texts/s (tuned engine) "
        "| load before / after |",
        "| --- | --- | " + " | ".join("---" for _ in CORPORA) + " | --- | --- | --- | --- |",
    ]
    for row in dict.fromkeys(r["row"] for r in rows):
        mine = [r for r in rows if r["row"] == row]
        cells = []
        for source in CORPORA:
            acc = [r["per_source"][source]["accuracy"] for r in mine if source in r["per_source"]]
            f1 = [r["per_source"][source]["macro_f1"] for r in mine if source in r["per_source"]]
            goal = GOALS.get(next((g for g in GOALS if row.startswith(g)), ""), {}).get(source)
            mark = "" if goal is None else (" (goal met)" if np.mean(acc) >= goal else f" (goal {goal:.1%}: NOT met)")
            spread = f" ± {np.std(acc, ddof=1):.4f}" if len(acc) > 1 else ""
            cells.append(f"{np.mean(acc):.4f}{spread} ({np.mean(f1):.3f}){mark}" if acc else "")
        times = "-".join(f"{r['train_runtime_s']:.0f}" for r in mine)
        rate = onnx_cell(mine, "int8_per_s")
        loads = "; ".join(f"{r['loadavg_before'][0]:.2f} / {r['loadavg_after'][0]:.2f}" for r in mine)
        where = "; ".join(sorted({f"{r['cpu']}, {r['precision']}" for r in mine}))
        lines.append(f"| {row} | {len(mine)} | " + " | ".join(cells) + f" | {times} | {where} | {rate} | {loads} |")
    lines += [
        "",
        "Validation (what the choices were made on), accuracy per source:",
        "",
        "| row | seeds | " + " | ".join(CORPORA) + " |",
        "| --- | --- | " + " | ".join("---" for _ in CORPORA) + " |",
    ]
    for row in dict.fromkeys(r["row"] for r in rows):
        mine = [r for r in rows if r["row"] == row and r.get("val_per_source")]
        cells = [
            f"{np.mean([r['val_per_source'][s]['accuracy'] for r in mine if s in r['val_per_source']]):.4f}"
            if any(s in r["val_per_source"] for r in mine)
            else ""
            for s in CORPORA
        ]
        lines.append(f"| {row} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=None, choices=list(ROWS), help="default: minilm-pb minilm-mix")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--mix", default=None, help="a mix file (caps, weights) to train the -mix rows on")
    parser.add_argument("--tag", default="", help="appended to each row's name, e.g. -pbx3 for a mix variant")
    parser.add_argument("--teacher_tag", default="", help="the teacher row's tag, e.g. -e1 for teacher-mix-e1")
    parser.add_argument("--max_length", type=int, default=TrainConfig().max_length)
    parser.add_argument("--num_epochs", type=float, default=TrainConfig().num_epochs)
    parser.add_argument("--precision", default="auto", help="training arithmetic (finsent train --precision)")
    parser.add_argument(
        "--int8", action="store_true", help="export each run and time its tuned ONNX engine on the test split"
    )
    parser.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="ROW",
        help="also score the mean probability of these finished rows (tags included), e.g. two teachers",
    )
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/domains"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/domains"))
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = [] if args.ensemble else ["minilm-pb", "minilm-mix"]
    cpu = cpu_model()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load {load()}", flush=True)
    saved = args.out.with_suffix(".json")
    rows = read_rows(saved)
    data = load_data(CORPORA)
    for seed in args.seeds:
        splits = split_data(data, seed)
        alone = split_data(load_data(["phrasebank"]), seed)
        mixed = [t for t, s in zip(splits.test.texts, splits.test.sources) if s == "phrasebank"]
        assert alone.test.texts == mixed, "PhraseBank's test split differs inside the mix"
        jobs = [partial(run_row, row) for row in args.rows]
        if args.ensemble:
            jobs.append(partial(ensemble_row, args.ensemble))
        for job in jobs:
            start = time.time()
            result = job(seed, args, splits)
            rows = [r for r in rows if (r["row"], r["seed"]) != (result["row"], seed)] + [result]
            accs = ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in result["per_source"].items())
            print(
                f"{result['row']} seed {seed}: {accs}; train {result['train_runtime_s']:.0f}s ({time.time() - start:.0f}s in all); "
                f"load {result['loadavg_before']} -> {result['loadavg_after']}",
                flush=True,
            )
            write_json(saved, {"cpu": cpu, "cores": os.cpu_count(), "rows": rows})
    write_text(args.out.with_suffix(".md"), to_markdown(rows, cpu))
    print(to_markdown(rows, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
