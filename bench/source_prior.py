"""Issue 22 probe: would a per-source decision rule, or an ensemble of seeds, lift finished mix runs on a source?

    python bench/source_prior.py --rows teacher-mix-full-bf16-e3 student-mix-full-tfull-e3 minilm-mix --seeds 0 1 2

Nothing is trained. For each finished run of bench/domains.py (--work_dir/<row>-s<seed>) and each source, a bias on
the negative and positive logits (neutral fixed at 0) is fitted on that source's validation split, two ways: the
bias minimising the validation NLL (a per-source prior correction), and the centre of the best region of validation
accuracy over a grid (-3..3, step 0.1, smoothed over 5x5 cells). Each is applied once to the source's test split
(the run's evaluation_log.csv; Twitter Financial News: its published validation split). A user would pass the
source at prediction time to get it. --ensemble also averages the rows' seeds on the tweets' official test split,
the one split no seed trained on (each seed's other splits differ, so nothing else is clean across seeds).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.optimize import minimize
from scipy.special import log_softmax

sys.path.insert(0, str(Path(__file__).parent))
from domains import CORPORA  # noqa: E402  (bench/domains.py: the mix's corpora, in its order)
from finsent.core.hardware import cpu_model  # noqa: E402
from finsent.core.serialization import write_json, write_text  # noqa: E402
from finsent.data.corpus import load_data  # noqa: E402
from finsent.data.labels import LABELS  # noqa: E402
from finsent.data.splits import split_data  # noqa: E402
from finsent.runs.folder import read_log, read_val_logits  # noqa: E402

TWEETS = "twitter-financial-news"
GRID = np.round(np.arange(-3, 3.01, 0.1), 2)


def as_bias(b) -> np.ndarray:
    """(negative, positive) biases as a logit offset; neutral stays 0."""
    return np.array([b[0], 0.0, b[1]])


def fit_bias_nll(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    def nll(b):
        logp = log_softmax(logits + as_bias(b), axis=1)
        return -logp[np.arange(len(labels)), labels].mean()

    return as_bias(minimize(nll, [0.0, 0.0], method="L-BFGS-B", bounds=[(-3, 3)] * 2).x)


def fit_bias_accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    acc = np.array([[accuracy(logits + as_bias((a, c)), labels) for c in GRID] for a in GRID])
    i, j = np.unravel_index(uniform_filter(acc, size=5, mode="nearest").argmax(), acc.shape)
    return as_bias((GRID[i], GRID[j]))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def read_test_split(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run's test log as log-probabilities (logits up to a row constant; the log's probabilities are untempered),
    label indices and sources."""
    log = read_log(run)
    probs = log[[f"prob_{name}" for name in LABELS]].to_numpy()
    labels = log["true_label"].map(LABELS.index).to_numpy()
    return np.log(np.clip(probs, 1e-7, None)), labels, log["source"].to_numpy()


def probe_run(run: Path, splits, test: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict:
    """Per source: validation and test accuracy as trained and with each fitted bias (test: read_test_split(run))."""
    val = read_val_logits(run)
    if val is None or list(val["labels"]) != list(splits.val.labels):
        raise SystemExit(f"{run}: no validation logits of this seed's validation split")
    v_logits, v_labels = val["logits"].astype(np.float64), val["labels"]
    v_sources = np.array(splits.val.sources)
    t_logits, t_labels, t_sources = test
    out = {}
    for source in CORPORA:
        vm, tm = v_sources == source, t_sources == source
        row = {"val": accuracy(v_logits[vm], v_labels[vm]), "test": accuracy(t_logits[tm], t_labels[tm])}
        for how, fit in (("nll", fit_bias_nll), ("accuracy", fit_bias_accuracy)):
            bias = fit(v_logits[vm], v_labels[vm])
            row[how] = {
                "bias": bias.tolist(),
                "val": accuracy(v_logits[vm] + bias, v_labels[vm]),
                "test": accuracy(t_logits[tm] + bias, t_labels[tm]),
            }
        out[source] = row
    return out


def ensemble(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """Each run's and their mean's accuracy on the tweets' official test split (the same texts in every seed), from
    the runs' read_test_split."""
    keep = [p[2] == TWEETS for p in parts]
    labels = parts[0][1][keep[0]]
    probs = [np.exp(p[0][k]) for p, k in zip(parts, keep)]
    if any(len(p) != len(labels) for p in probs) or any(
        not np.array_equal(p[1][k], labels) for p, k in zip(parts, keep)
    ):
        raise SystemExit("the runs' tweets test splits differ; --ensemble needs the same published split in each")
    return {
        "each": [accuracy(np.log(p), labels) for p in probs],
        "mean_of_all": accuracy(np.log(np.mean(probs, axis=0)), labels),
    }


def to_markdown(result: dict) -> str:
    lines = [
        f"# Per-source decision bias and seed ensembles on finished mix runs ({result['cpu']})",
        "",
        "`python bench/source_prior.py`: nothing trained; test accuracy as trained, then with a bias on the negative "
        "and positive logits fitted on that source's validation split (NLL, or the best region of validation "
        "accuracy). Validation accuracy in brackets.",
        "",
        "| run | source | as trained | NLL-fitted bias | accuracy-fitted bias | bias (neg, pos), accuracy fit |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run, per_source in result["runs"].items():
        for source, r in per_source.items():
            b = r["accuracy"]["bias"]
            lines.append(
                f"| {run} | {source} | {r['test']:.4f} ({r['val']:.4f}) | {r['nll']['test']:.4f} ({r['nll']['val']:.4f}) "
                f"| {r['accuracy']['test']:.4f} ({r['accuracy']['val']:.4f}) | {b[0]:+.1f}, {b[2]:+.1f} |"
            )
    for row, ens in result.get("ensembles", {}).items():
        each = ", ".join(f"{a:.4f}" for a in ens["each"])
        lines += [
            "",
            f"Seeds of {row} averaged on the tweets' official test split: each {each}; mean **{ens['mean_of_all']:.4f}**.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", required=True, help="finished bench/domains.py rows, tags included")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ensemble", action="store_true", help="also average each row's seeds on the tweets' test")
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/domains"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/source_prior"))
    args = parser.parse_args(argv)
    data = load_data(CORPORA)
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "runs": {}, "ensembles": {}}
    tests: dict[str, list] = {row: [] for row in args.rows}  # each row's finished seeds' test splits, read once
    for seed in args.seeds:
        splits = split_data(data, seed)
        for row in args.rows:
            run = args.work_dir / f"{row}-s{seed}"
            if (run / "results.json").is_file():
                tests[row].append(read_test_split(run))
                result["runs"][run.name] = probe_run(run, splits, tests[row][-1])
    if args.ensemble:
        result["ensembles"] = {row: ensemble(parts) for row, parts in tests.items() if len(parts) > 1}
    write_json(args.out.with_suffix(".json"), result)
    write_text(args.out.with_suffix(".md"), to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
