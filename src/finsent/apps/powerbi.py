"""Tidy CSVs of one or more runs for Power BI or a spreadsheet: runs, predictions, per-class metrics, confusion."""

from __future__ import annotations

from pathlib import Path

from finsent.core.serialization import write_csv
from finsent.data.labels import LABELS
from finsent.runs.folder import LOG_COLUMNS, SCALAR_METRICS, SOURCE_METRICS, Run

RUN_COLUMNS = [
    "run",
    "version",
    "run_dir",
    "created_at",
    "model_name",
    "mode",
    *SCALAR_METRICS,
    "agreement",
    "seed",
    "data_sha256",
]
PREDICTION_COLUMNS = ["run", *LOG_COLUMNS]
PER_CLASS_COLUMNS = ["run", "version", "label", "precision", "recall", "f1", "support", "error_rate"]
CONFUSION_COLUMNS = ["run", "version", "true_label", "pred_label", "count"]
PER_SOURCE_COLUMNS = ["run", "version", "source", *SOURCE_METRICS]


def run_rows(runs: list[Run]) -> list[dict]:
    rows = []
    for r in runs:
        res, data = r.results, r.results.get("data") or {}
        row = {c: res.get(c) for c in RUN_COLUMNS}
        row.update(
            run=r.label,
            version=r.version,
            run_dir=str(r.path),
            mode="LoRA" if res.get("use_lora") else "full",
            agreement=data.get("agreement"),
            seed=data.get("seed"),
            data_sha256=data.get("sha256"),
        )
        rows.append(row)
    return rows


def prediction_rows(runs: list[Run]) -> list[dict]:
    return [{"run": r.label, **row} for r in runs for row in r.log[LOG_COLUMNS].to_dict("records")]


def per_class_rows(runs: list[Run]) -> list[dict]:
    """Per run and class: precision, recall, F1, support and error rate (1 - recall: share of the class missed)."""
    rows = []
    for r in runs:
        for label, m in r.results["per_class"].items():
            recall = m.get("recall")
            rows.append(
                {
                    "run": r.label,
                    "version": r.version,
                    "label": label,
                    **{k: m.get(k) for k in ("precision", "recall", "f1", "support")},
                    "error_rate": None if recall is None else 1.0 - recall,
                }
            )
    return rows


def confusion_rows(runs: list[Run]) -> list[dict]:
    """One row per run, true label and predicted label with the count (the confusion matrix, long form)."""
    rows = []
    for r in runs:
        for i, true_label in enumerate(LABELS):
            for j, pred_label in enumerate(LABELS):
                rows.append(
                    {
                        "run": r.label,
                        "version": r.version,
                        "true_label": true_label,
                        "pred_label": pred_label,
                        "count": r.results["confusion_matrix"][i][j],
                    }
                )
    return rows


def per_source_rows(runs: list[Run]) -> list[dict]:
    """Per run and source: accuracy, macro-F1, ECE and the split sizes (a run on one corpus has one source)."""
    return [
        {"run": r.label, "version": r.version, "source": name, **{k: m.get(k) for k in SOURCE_METRICS}}
        for r in runs
        for name, m in (r.results.get("per_source") or {}).items()
    ]


def export_runs(runs: list[Run], out_dir: Path, raw_csv: bool = False) -> list[Path]:
    """Write runs.csv, predictions.csv, per_class_metrics.csv, confusion_matrix.csv and per_source_metrics.csv;
    return their paths.

    A string cell that a spreadsheet would run as a formula gets a leading ' (neutralise_cell), unless raw_csv."""
    out_dir = Path(out_dir)
    files = [
        (out_dir / "runs.csv", run_rows(runs), RUN_COLUMNS),
        (out_dir / "predictions.csv", prediction_rows(runs), PREDICTION_COLUMNS),
        (out_dir / "per_class_metrics.csv", per_class_rows(runs), PER_CLASS_COLUMNS),
        (out_dir / "confusion_matrix.csv", confusion_rows(runs), CONFUSION_COLUMNS),
        (out_dir / "per_source_metrics.csv", per_source_rows(runs), PER_SOURCE_COLUMNS),
    ]
    for path, rows, columns in files:
        write_csv(path, rows, columns, neutralise=not raw_csv)
    return [path for path, _, _ in files]
