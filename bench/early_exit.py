#!/usr/bin/env python
"""Early-exit benchmark: shallow exits distilled from a full run, against the full model, on agreement and speed.

    python bench/early_exit.py --model_dir RUN [--num_layers 1 2 3] [--exits_root DIR] [--n 2000]

For each N in --num_layers an exit is a student of the run with its first N encoder layers, distilled from the run
itself (`finsent distill --teacher RUN --num_layers N`, the run's own split and seed, every weight trained:
RECIPE), kept in <exits_root>/L<N> and trained only where it is missing; each is exported to ONNX int8. Of the
unlabeled PhraseBank sentences outside the run's splits, --eval_sentences are kept away from the exits altogether,
--threshold_sentences are held out of their training to choose the exit threshold on (with validation: >= 99.5 %
agreement with the full model), and the rest are trained on. The early exit answers where its calibrated margin
clears that threshold and defers the rest to the full model (`finsent predict --early_exit`).

Agreement with the full model's labels is measured on sentences no exit trained or chose its threshold on: the
run's test split plus the --eval_sentences.
Throughput: --n PhraseBank sentences through the full model and each early exit, ONNX int8, --threads threads, each
row in a fresh process, one after the other, the load average printed beside each row. Writes bench/results/early_exit.md/.json.
The other way of issue 13: exits trained with the model. A student distilled from the run's own teacher with exits
after --exit_layers (`finsent distill --exit_layers 1 3`, MULTI_RECIPE, the same split, seed and unlabeled draw; kept in
<exits_root>/multi-L<layers>) is cut into segments at its exits (`predict --early_exit`); its agreement is with its own
final layer, on the same unseen sentences. Every throughput row is measured after one untimed pass over the same
sentences (OpenVINO compiles each new input shape once; the segments see more shapes than the whole model).
Goal (issue 13): >= 1,500 sentences/s at >= 99.5 % agreement with the full model.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from cascade import save, timed  # noqa: E402

GOAL = {"sentences_per_s": 1500, "agreement": 0.995}
# shallow exits learn well with every weight trained (LoRA at lr 1e-3 on 1-3 layers never learned 'negative')
RECIPE = ["--num_epochs", "6", "--learning_rate", "2e-4"]
# exits trained with a student: the student recipe of bench/accuracy.py (LoRA, lr 1e-3), exits following the final
# layer only. Also tried on this split: every weight at lr 1e-4 for 3 epochs let out as many sentences, but its final
# layer lost 2.7 points of test accuracy (0.9292); --exit_follow 0.5 (exits also learn from the teacher directly)
# agreed with the final layer on only 98.9 % of the unseen sentences (99.5 % on the threshold sentences).
MULTI_RECIPE = ["--use_lora", "--num_epochs", "3", "--exit_follow", "1"]


def finsent(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "finsent", *argv], check=True)


def ensure_distilled(
    teacher: str, out: Path, flags: list[str], data: dict, data_path: str, unlabeled: list[str]
) -> None:
    """Distill `out` from `teacher` with the run's split and seed if it is not there yet, and export it to ONNX."""
    if not (out / "results.json").is_file():
        finsent(
            "distill",
            "--teacher",
            teacher,
            *flags,
            *unlabeled,
            "--data_path",
            data_path,
            "--agreement",
            str(data["agreement"]),
            "--seed",
            str(data["seed"]),
            "--output_dir",
            str(out),
        )
    ensure_onnx(out)


def multi_exit_rows(mdir: Path, parts: dict, gold: np.ndarray, args) -> list[dict]:
    """The multi-exit student's final layer and its early exit: agreement with the final layer, exit shares, speed."""
    from collections import Counter

    from finsent.inference.factory import PredictorOptions, build_predictor

    final = build_predictor(mdir, PredictorOptions(backend="onnx", threads=args.threads))
    early = build_predictor(mdir, PredictorOptions(backend="onnx", threads=args.threads, early_exit=True))
    layers = early.backend.layers
    final_labels = {name: final.score(part).probs.argmax(1) for name, part in parts.items()}
    full_row = isolated("multi-exit student, final layer (onnx int8)", "full", mdir, args)
    full_row.update(layers=None, test_accuracy=float((final_labels["test"] == gold).mean()))
    row = {"layers": layers, "thresholds": early.backend.thresholds}
    for name, part in parts.items():
        scores = early.score(part)
        count = Counter(scores.answered_by)
        row[f"agreement_{name}"] = float((scores.probs.argmax(1) == final_labels[name]).mean())
        row[f"exit_shares_{name}"] = [count[f"layer {k}"] / len(part) for k in layers]
        row[f"n_{name}"] = len(part)
        if name == "test":
            row["test_accuracy"] = float((scores.probs.argmax(1) == gold).mean())
    n = sum(len(p) for p in parts.values())
    row["agreement"] = sum(row[f"agreement_{k}"] * len(p) for k, p in parts.items()) / n
    name = f"multi-exit student, early exit at layers {', '.join(map(str, layers))} (onnx int8)"
    row.update(isolated(name, "exits", mdir, args))
    return [full_row, row]


def row_predictor(spec: dict):
    """The predictor a throughput row times: a full model, a run's own exits, or a shallow exit + the full model."""
    from finsent.inference.factory import PredictorOptions, build_predictor

    on = {"backend": "onnx", "threads": spec["threads"]}
    if spec["kind"] == "full":
        return build_predictor(spec["model_dir"], PredictorOptions(**on))
    if spec["kind"] == "exits":
        return build_predictor(spec["model_dir"], PredictorOptions(**on, early_exit=True))
    return build_predictor(spec["model_dir"], PredictorOptions(**on, early_exit_dir=spec["exit_dir"]))


def child_row(spec: dict) -> dict:
    """One throughput row, in this (fresh) process: an untimed pass over the sentences, then the timed one."""
    from finsent.data.corpus import load_data

    everything = load_data(spec["data_path"], "50").texts
    texts = (everything * (spec["n"] // len(everything) + 1))[: spec["n"]]
    predictor = row_predictor(spec)
    predictor.score(texts)
    if spec["kind"] == "exits":
        predictor.backend.answered[:] = 0
    elif spec["kind"] == "cascade":
        predictor.deferred = predictor.scored = 0
    row = timed(spec["name"], predictor, texts, warmup=0)
    if spec["kind"] == "exits":
        answered = predictor.backend.answered
        row["exit_shares_throughput"] = [int(answered[k]) / int(answered.sum()) for k in predictor.backend.layers]
    elif spec["kind"] == "cascade":
        row["exit_share_throughput"] = 1 - predictor.deferred / predictor.scored
    return row


def isolated(name: str, kind: str, model_dir: Path, args, exit_dir: Path | None = None) -> dict:
    """child_row in a fresh process: rows timed one after the other in one process slowed the later ones (each
    OpenVINO model there keeps its own thread pool; the same model measured 843/s there and 987/s alone)."""
    import json

    spec = {"name": name, "kind": kind, "model_dir": str(model_dir), "exit_dir": str(exit_dir) if exit_dir else None}
    spec.update(threads=args.threads, n=args.n, data_path=args.data_path)
    out = subprocess.run(
        [sys.executable, __file__, "--model_dir", str(model_dir), "--row", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    )
    print(out.stderr.strip().splitlines()[-1], file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_onnx(run: Path) -> None:
    from finsent.inference.backends import find_onnx

    try:
        find_onnx(run)
    except Exception:  # noqa: BLE001 - no export yet: make one
        finsent("export-onnx", "--model_dir", str(run))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True, help="the full run (a `finsent train` or `finsent distill` folder)")
    p.add_argument("--num_layers", type=int, nargs="+", default=[1, 2, 3], help="exit depths (default: 1 2 3)")
    p.add_argument("--exits_root", default=None, help="where the exits live (default: <model_dir>-exits)")
    p.add_argument(
        "--exit_layers",
        type=int,
        nargs="*",
        default=[1, 3],
        help="exits trained with a student (default: 1 3; none: skip)",
    )
    p.add_argument("--eval_sentences", type=int, default=600, help="unlabeled sentences kept for measuring")
    p.add_argument("--threshold_sentences", type=int, default=800, help="unlabeled sentences to choose thresholds on")
    p.add_argument("--data_path", default=str(ROOT.parent / "shared" / "data" / "FinancialPhraseBank-v1.0.zip"))
    p.add_argument("--n", type=int, default=2000, help="sentences for the throughput rows (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "early_exit"))
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # one isolated throughput row (JSON spec)
    args = p.parse_args(argv)
    if args.row:
        import json

        print(json.dumps(child_row(json.loads(args.row))))
        return 0

    from finsent.core.metrics import margins
    from finsent.data.corpus import load_data
    from finsent.data.splits import split_data
    from finsent.inference.factory import PredictorOptions, build_predictor
    from finsent.runs.folder import read_results
    from finsent.training.distill import DistillConfig, unlabeled_sentences

    run = Path(args.model_dir)
    exits_root = Path(args.exits_root or f"{run}-exits")
    data = read_results(run)["data"]
    splits = split_data(load_data(args.data_path, data["agreement"]), data["seed"])
    held = set(splits.train.texts) | set(splits.val.texts) | set(splits.test.texts)
    everything = load_data(args.data_path, "50").texts
    outside = [t for t in everything if t not in held]
    unlabeled = ["--max_unlabeled", str(len(outside) - args.eval_sentences)]
    unlabeled += ["--threshold_sentences", str(args.threshold_sentences)]
    # the same draw `finsent distill` makes: what is left is no exit's
    dcfg = DistillConfig(
        teacher=str(run), max_unlabeled=len(outside) - args.eval_sentences, threshold_sentences=args.threshold_sentences
    )
    used, threshold, _ = unlabeled_sentences(splits, dcfg, args.data_path, data["seed"])
    seen = set(used) | set(threshold)
    unseen = [t for t in outside if t not in seen]
    for layers in args.num_layers:
        flags = ["--num_layers", str(layers), *RECIPE]  # an exit is distilled from the run itself
        ensure_distilled(str(run), exits_root / f"L{layers}", flags, data, args.data_path, unlabeled)
    ensure_onnx(run)
    full = build_predictor(run, PredictorOptions(backend="onnx", threads=args.threads))
    parts = {"test": splits.test.texts, "unseen": unseen}
    full_labels = {name: full.score(texts).probs.argmax(1) for name, texts in parts.items()}
    gold = np.asarray(splits.test.labels)
    rows = [isolated("full model (onnx int8)", "full", run, args)]
    rows[0].update(layers=None, test_accuracy=float((full_labels["test"] == gold).mean()))
    for layers in args.num_layers:
        exit_dir = exits_root / f"L{layers}"
        on = PredictorOptions(backend="onnx", threads=args.threads, early_exit_dir=str(exit_dir))
        early = build_predictor(run, on)  # the shallow exit, then the full model below its threshold
        shallow = early.student
        row = {"layers": layers, "threshold": early.threshold}
        for name, part in parts.items():
            early.deferred = early.scored = 0
            probs = early.score(part).probs
            shallow_margin = margins(shallow.score(part).probs)
            row[f"agreement_{name}"] = float((probs.argmax(1) == full_labels[name]).mean())
            row[f"exit_share_{name}"] = float((shallow_margin >= early.threshold).mean())
            row[f"n_{name}"] = len(part)
            if name == "test":
                row["test_accuracy"] = float((probs.argmax(1) == gold).mean())
        n = len(splits.test) + len(unseen)
        row["agreement"] = (row["agreement_test"] * len(splits.test) + row["agreement_unseen"] * len(unseen)) / n
        row.update(isolated(f"early exit after {layers} layers (onnx int8)", "cascade", run, args, exit_dir))
        rows.append(row)

    multi: list[dict] = []
    if args.exit_layers:
        mdir = exits_root / f"multi-L{'-'.join(map(str, args.exit_layers))}"
        flags = ["--exit_layers", *map(str, args.exit_layers), *MULTI_RECIPE]  # from the run's own teacher
        ensure_distilled(read_results(run)["teacher"]["run"], mdir, flags, data, args.data_path, unlabeled)
        multi = multi_exit_rows(mdir, parts, gold, args)

    result = {
        "command": "python bench/early_exit.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model_dir": str(run),
        "test_split": {"agreement": data["agreement"], "seed": data["seed"], "n": len(splits.test)},
        "rows": rows,
        "multi_exit": multi,
        "goal": GOAL,
    }
    md = [
        f"Command: `{result['command']}`  ",
        f"Full model {run} ({data['agreement']}Agree seed {data['seed']}). Agreement measured on its test split "
        f"({len(splits.test)} sentences) and {len(unseen)} other PhraseBank sentences, both unseen by every exit; "
        f"exits distilled ({' '.join(RECIPE)}) on the gold train split and {len(used)} unlabeled sentences, "
        f"thresholds chosen by `finsent distill` on validation plus {len(threshold)} held-out ones; "
        f"throughput {args.n} PhraseBank sentences, {args.threads} threads, ONNX int8 for every model.",
        "",
        "| model | exit threshold | answered by the exit (test / unseen / throughput set) | agreement with the full "
        "model (test / unseen / both) | test accuracy | sentences/s | load before / after |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["layers"] is None:
            md.append(
                f"| {row['name']} | | | | {row['test_accuracy']:.4f} | {row['sentences_per_s']:.0f} | "
                f"{row['loadavg_before'][0]:.2f} / {row['loadavg_after'][0]:.2f} |"
            )
            continue
        md.append(
            f"| {row['name']} | {row['threshold']:.3f} | {row['exit_share_test']:.1%} / {row['exit_share_unseen']:.1%}"
            f" / {row['exit_share_throughput']:.1%} | {row['agreement_test']:.2%} / {row['agreement_unseen']:.2%} / "
            f"{row['agreement']:.2%} | "
            f"{row['test_accuracy']:.4f} | {row['sentences_per_s']:.0f} | "
            f"{row['loadavg_before'][0]:.2f} / {row['loadavg_after'][0]:.2f} |"
        )
    if multi:
        final_row, row = multi
        shares = lambda key: " + ".join(f"{x:.1%}" for x in row[key])  # noqa: E731
        md += [
            "",
            f"Exits trained with the model: {mdir.name}, distilled ({' '.join(MULTI_RECIPE)}) from the run's teacher on "
            "the same sentences; agreement is with its own final layer.",
            "",
            "| model | exit thresholds | answered early (test / unseen / throughput set) | agreement with its final "
            "layer (test / unseen / both) | test accuracy | sentences/s | load before / after |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {final_row['name']} | | | | {final_row['test_accuracy']:.4f} | {final_row['sentences_per_s']:.0f} | "
            f"{final_row['loadavg_before'][0]:.2f} / {final_row['loadavg_after'][0]:.2f} |",
            f"| {row['name']} | {' / '.join(f'{t:.3f}' for t in row['thresholds'])} | {shares('exit_shares_test')} / "
            f"{shares('exit_shares_unseen')} / {shares('exit_shares_throughput')} | {row['agreement_test']:.2%} / "
            f"{row['agreement_unseen']:.2%} / {row['agreement']:.2%} | {row['test_accuracy']:.4f} | "
            f"{row['sentences_per_s']:.0f} | {row['loadavg_before'][0]:.2f} / {row['loadavg_after'][0]:.2f} |",
        ]
    candidates = [(r, rows[0]) for r in rows[1:]] + ([(multi[1], multi[0])] if multi else [])
    agreeing = [c for c in candidates if c[0]["agreement"] >= GOAL["agreement"]]
    best, base = max(agreeing or candidates, key=lambda c: c[0]["sentences_per_s"])
    ok = best["sentences_per_s"] >= GOAL["sentences_per_s"] and best["agreement"] >= GOAL["agreement"]
    md += [
        "",
        f"- fastest early exit{' at the agreement goal' if agreeing else ''}: {best['name']}, "
        f"{best['sentences_per_s']:.0f} sentences/s ({best['sentences_per_s'] / base['sentences_per_s']:.2f}x its "
        f"full model), agreement {best['agreement']:.2%} on the sentences no exit saw",
        f"- goal >= {GOAL['sentences_per_s']} sentences/s at >= {GOAL['agreement']:.1%} agreement: "
        f"{'reached' if ok else 'NOT reached'}",
    ]
    save(args.out, result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
