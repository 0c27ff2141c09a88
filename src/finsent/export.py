"""Tidy CSVs of one or more runs for Power BI or a spreadsheet: runs, predictions, per-class metrics, confusion."""

from __future__ import annotations

from pathlib import Path

from finsent.data import LABELS
from finsent.runs import LOG_COLUMNS, Run
from finsent.serialization import write_csv

RUN_COLUMNS = [
    "run",
    "version",
    "run_dir",
    "created_at",
    "model_name",
    "mode",
    "accuracy",
    "macro_f1",
    "avg_confidence",
    "ece",
    "ece_calibrated",
    "temperature",
    "val_nll_before",
    "val_nll_after",
    "n_train",
    "n_val",
    "n_test",
    "trainable_params",
    "total_params",
    "trainable_percent",
    "train_runtime_s",
    "epochs_run",
    "best_val_macro_f1",
    "agreement",
    "seed",
    "data_sha256",
]
PREDICTION_COLUMNS = ["run", *LOG_COLUMNS]
PER_CLASS_COLUMNS = ["run", "version", "label", "precision", "recall", "f1", "support", "error_rate"]
CONFUSION_COLUMNS = ["run", "version", "true_label", "pred_label", "count"]


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


def export_runs(runs: list[Run], out_dir: Path) -> list[Path]:
    """Write runs.csv, predictions.csv, per_class_metrics.csv and confusion_matrix.csv; return their paths."""
    out_dir = Path(out_dir)
    files = [
        (out_dir / "runs.csv", run_rows(runs), RUN_COLUMNS),
        (out_dir / "predictions.csv", prediction_rows(runs), PREDICTION_COLUMNS),
        (out_dir / "per_class_metrics.csv", per_class_rows(runs), PER_CLASS_COLUMNS),
        (out_dir / "confusion_matrix.csv", confusion_rows(runs), CONFUSION_COLUMNS),
    ]
    for path, rows, columns in files:
        write_csv(path, rows, columns)
    return [path for path, _, _ in files]
