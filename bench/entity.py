"""Entity-level sentiment (issue 23): who the news is good or bad for, on SEntFiN and FinEntity split by text.

    python bench/entity.py --rows sentence-baseline entity-minilm --seeds 0
    python bench/entity.py --rows entity-teacher entity-student --seeds 0 --int8

Each row is a real finsent run per seed in --work_dir/<row>-s<seed> (a finished run is reused), scored on the same
(text, entity) test split of that seed through its own Predictor: overall and per-source accuracy, macro-F1 and
`mixed_accuracy` (the entities of test texts whose entities carry different labels, where one sentence label is
right for one side only). `sentence-baseline` is what a user has today: the default sentence-level recipe (MiniLM
LoRA on PhraseBank, which never saw these corpora) applied to each entity's text. Choices (the input style, epochs)
are made on validation; test is scored once per run. --int8 exports the run (`finsent export-onnx`) and times the
int8 path on the test pairs. CPU model and load average are printed beside each row.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from domains import load, onnx_cell, onnx_rate, read_rows  # noqa: E402
from finsent.core import metrics  # noqa: E402
from finsent.core.hardware import cpu_model  # noqa: E402
from finsent.core.serialization import write_json, write_text  # noqa: E402
from finsent.data.corpus import load_data, load_entity_data  # noqa: E402
from finsent.data.labels import LABELS  # noqa: E402
from finsent.data.splits import split_data  # noqa: E402
from finsent.inference.factory import PredictorOptions, build_predictor  # noqa: E402
from finsent.runs.folder import read_results  # noqa: E402
from finsent.training.config import PACKAGED_CONFIG_DIR, TrainConfig  # noqa: E402
from finsent.training.distill import DistillConfig, run_inputs  # noqa: E402
from finsent.training.trainer import train  # noqa: E402

CORPORA = ["sentfin", "finentity"]
MPNET = "all-mpnet-base-v2"
ENTITY = {"task": "entity", "use_lora": True}
# row -> (TrainConfig overrides, DistillConfig overrides with the teacher's row, or None)
ROWS = {
    "sentence-baseline": ({"task": "sentence", "use_lora": True, "data_path": ["phrasebank"]}, None),
    "entity-minilm": (ENTITY, None),
    "entity-minilm-pair": ({**ENTITY, "entity_style": "pair"}, None),
    "entity-teacher": ({**ENTITY, "model_name": MPNET, "lora_config": "lora_attention.json"}, None),
    # every weight free, at the learning rate base-size encoders are fine-tuned with (the sentence teacher's best)
    "entity-teacher-full": ({**ENTITY, "use_lora": False, "model_name": MPNET, "learning_rate": 3e-5}, None),
    "entity-student": ({**ENTITY, "use_lora": False}, {"teacher": "entity-teacher", "unlabeled_agreement": "none"}),
}
GOALS = {"entity-teacher": (0.95, 0.90), "entity-student": (0.93, 0.85)}  # SEntFiN accuracy, mixed_accuracy


def config_for(row: str, seed: int, out: Path, args) -> tuple[TrainConfig, DistillConfig | None]:
    overrides, distill_overrides = ROWS[row]
    overrides = dict(overrides)
    if "lora_config" in overrides:
        overrides["lora_config"] = str(PACKAGED_CONFIG_DIR / overrides["lora_config"])
    if args.learning_rate is not None:
        overrides["learning_rate"] = args.learning_rate
    cfg = TrainConfig(
        **{"data_path": CORPORA, **overrides},
        seed=seed,
        output_dir=str(out),
        version=out.name,
        max_length=args.max_length,
        num_epochs=args.num_epochs,
        precision=args.precision,
        tracking_uri=f"sqlite:///{args.work_dir.resolve()}/mlruns.db",
    )
    distill = None
    if distill_overrides is not None:
        teacher = args.work_dir / f"{distill_overrides['teacher']}{args.teacher_tag}-s{seed}"
        distill = DistillConfig(**{**distill_overrides, "teacher": str(teacher)})
    return cfg, distill


def score(run: Path, part, sentence_level: bool) -> dict:
    """Overall and per-source accuracy, macro-F1 and mixed_accuracy of a run on an entity split (PyTorch)."""
    predictor = build_predictor(run, PredictorOptions(backend="torch"))
    inputs = part.texts if sentence_level else run_inputs(run, part)  # the baseline labels each entity by its text
    probs = predictor.score(inputs).probs
    pred = probs.argmax(1)
    out = {}
    for name in ["all", *part.source_names]:
        rows = [i for i, s in enumerate(part.sources) if name in ("all", s)]
        y = np.asarray(part.labels)[rows]
        found = metrics.classification_metrics(y, pred[rows], LABELS)
        mixed, n_mixed = metrics.mixed_accuracy(
            [part.texts[i] for i in rows], [part.entities[i] for i in rows], y, pred[rows]
        )
        out[name] = {
            "accuracy": found["accuracy"],
            "macro_f1": found["macro_f1"],
            "mixed_accuracy": mixed,
            "n_mixed": n_mixed,
        }
    return out


def run_row(row: str, seed: int, args, splits) -> dict:
    tag = "" if row == "sentence-baseline" else args.tag  # the baseline is the default sentence recipe, untagged
    out = args.work_dir / f"{row}{tag}-s{seed}"
    before = load()
    if not (out / "results.json").is_file():
        cfg, distill = config_for(row, seed, out, args)
        train(cfg, distill=distill)
    results = read_results(out)
    sentence_level = ROWS[row][0]["task"] == "sentence"
    test = score(out, splits.test, sentence_level)
    val = score(out, splits.val, sentence_level)
    after = load()
    timed = args.int8 and not sentence_level
    rate, engine = onnx_rate(out, run_inputs(out, splits.test)) if timed else (None, None)
    return {
        "row": row + tag,
        "seed": seed,
        "run": str(out),
        "train_runtime_s": results["train_runtime_s"],
        "epochs_run": results["epochs_run"],
        "n_train": results["n_train"],
        "test": test,
        "val": val,
        "int8_pairs_per_s": rate,
        "onnx_engine": engine,
        "loadavg_before": before,
        "loadavg_after": after,
        "loadavg_after_int8": load() if rate else None,
        "config": {
            k: results["config"].get(k) for k in ("model_name", "use_lora", "entity_style", "max_length", "num_epochs")
        },
        "cpu": cpu_model(),
        "precision": results["config"].get("precision", "fp32"),
    }


def _cell(rows: list[dict], part: str, source: str, key: str) -> str:
    values = [r[part][source][key] for r in rows if source in r[part] and r[part][source][key] is not None]
    return f"{np.mean(values):.4f}" if values else ""


def to_markdown(rows: list[dict], cpu: str) -> str:
    head = (
        "| row | seeds | all | sentfin | finentity | sentfin mixed | finentity mixed | all macro-F1 | val all | "
        "val mixed | train s | CPU, training precision | ONNX pairs/s (tuned engine) | load before / after |"
    )
    lines = [
        f"# Entity-level sentiment: test accuracy per (text, entity) pair ({os.cpu_count()} cores; this run on {cpu})",
        "",
        "`python bench/entity.py`: SEntFiN 1.0 and FinEntity split by text (80/10/10, stratified, seeded); each row "
        "a real finsent run per seed; mixed = `mixed_accuracy`, the entities of test texts whose entities carry "
        "different labels. Mean over seeds. Goals: teacher SEntFiN >= 95 %, mixed >= 90 %; student SEntFiN >= 93 %, "
        "mixed >= 85 %, int8 >= 1,000 pairs/s.",
        "",
        head,
        "|" + " --- |" * (head.count("|") - 1),
    ]
    for row in dict.fromkeys(r["row"] for r in rows):
        mine = [r for r in rows if r["row"] == row]
        goal = next((g for name, g in GOALS.items() if row.startswith(name)), None)
        mark = ""
        if goal:
            met = float(_cell(mine, "test", "sentfin", "accuracy") or 0) >= goal[0]
            met_mixed = float(_cell(mine, "test", "all", "mixed_accuracy") or 0) >= goal[1]
            mark = f" (goals: SEntFiN {'met' if met else 'NOT met'}, mixed {'met' if met_mixed else 'NOT met'})"
        cells = [
            _cell(mine, "test", "all", "accuracy"),
            _cell(mine, "test", "sentfin", "accuracy"),
            _cell(mine, "test", "finentity", "accuracy"),
            _cell(mine, "test", "sentfin", "mixed_accuracy"),
            _cell(mine, "test", "finentity", "mixed_accuracy"),
            _cell(mine, "test", "all", "macro_f1"),
            _cell(mine, "val", "all", "accuracy"),
            _cell(mine, "val", "all", "mixed_accuracy"),
            "-".join(f"{r['train_runtime_s']:.0f}" for r in mine),
            "; ".join(sorted({f"{r['cpu']}, {r['precision']}" for r in mine})),
            onnx_cell(mine, "int8_pairs_per_s"),
            "; ".join(f"{r['loadavg_before'][0]:.2f} / {r['loadavg_after'][0]:.2f}" for r in mine),
        ]
        lines.append(f"| {row}{mark} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=["sentence-baseline", "entity-minilm"], choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--tag", default="", help="appended to each row's name, e.g. -e1 for a one-epoch variant")
    parser.add_argument("--teacher_tag", default="", help="the teacher row's tag, e.g. -e1 (pass as --teacher_tag=-e1)")
    parser.add_argument("--max_length", type=int, default=TrainConfig().max_length)
    parser.add_argument("--num_epochs", type=float, default=TrainConfig().num_epochs)
    parser.add_argument("--precision", default="auto", help="training arithmetic (finsent train --precision)")
    parser.add_argument("--learning_rate", type=float, default=None, help="instead of the row's (tag the row too)")
    parser.add_argument("--int8", action="store_true", help="export each entity run and time its tuned ONNX engine")
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/entity"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/entity"))
    args = parser.parse_args(argv)
    cpu = cpu_model()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load {load()}", flush=True)
    saved = args.out.with_suffix(".json")
    rows = read_rows(saved)
    data = load_entity_data(CORPORA)
    load_data("phrasebank")  # the baseline's corpus is there before any run starts
    for seed in args.seeds:
        splits = split_data(data, seed)
        for row in args.rows:
            start = time.time()
            result = run_row(row, seed, args, splits)
            rows = [r for r in rows if (r["row"], r["seed"]) != (result["row"], seed)] + [result]
            t = result["test"]
            print(
                f"{result['row']} seed {seed}: all {t['all']['accuracy']:.4f} sentfin {t['sentfin']['accuracy']:.4f} "
                f"finentity {t['finentity']['accuracy']:.4f} mixed {t['all']['mixed_accuracy']:.4f}; "
                f"train {result['train_runtime_s']:.0f}s ({time.time() - start:.0f}s in all); "
                f"ONNX {result['int8_pairs_per_s'] or '-'} pairs/s; load {result['loadavg_before']} -> {result['loadavg_after']}",
                flush=True,
            )
            write_json(saved, {"cpu": cpu, "cores": os.cpu_count(), "rows": rows})
    write_text(args.out.with_suffix(".md"), to_markdown(rows, cpu))
    print(to_markdown(rows, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
