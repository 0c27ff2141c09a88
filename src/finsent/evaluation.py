"""Turn model outputs into metrics, error attribution, results.json and evaluation_log.csv."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import numpy as np

from finsent import metrics
from finsent.data import LABELS
from finsent.serialization import write_csv, write_json

LOG_COLUMNS = [
    "sample_id",
    "text",
    "true_label",
    "pred_label",
    "confidence",
    "margin",
    *[f"prob_{name}" for name in LABELS],
    "is_correct",
    "error_type",
    "run_version",
]


def predict_logits(model, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 64) -> np.ndarray:
    """Batched inference, batches sorted by length; returns logits in input order."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            logits = model(**{k: v.to(device) for k, v in enc.items()}).logits
            out[idx] = logits.float().cpu().numpy()
    return out


def evaluate_logits(
    logits, y_true, texts, version: str, low: float = 0.6, high: float = 0.9, temperature: float = 1.0
) -> tuple[dict, list[dict]]:
    """Metrics dict and one evaluation-log row per sample."""
    probs = metrics.softmax(logits, temperature)
    y_true = np.asarray(y_true)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    correct = pred == y_true
    etypes = metrics.error_types(correct, conf, low, high)
    summary = metrics.classification_metrics(y_true, pred, LABELS)
    summary.update(
        avg_confidence=float(conf.mean()),
        ece=metrics.expected_calibration_error(conf, correct),
        error_types={t: etypes.count(t) for t in metrics.ERROR_TYPES},
    )
    margin = metrics.top2_margin(probs)
    rows = [
        {
            "sample_id": i,
            "text": texts[i],
            "true_label": LABELS[y_true[i]],
            "pred_label": LABELS[pred[i]],
            "confidence": round(float(conf[i]), 6),
            "margin": round(float(margin[i]), 6),
            **{f"prob_{name}": round(float(probs[i, j]), 6) for j, name in enumerate(LABELS)},
            "is_correct": bool(correct[i]),
            "error_type": etypes[i],
            "run_version": version,
        }
        for i in range(len(texts))
    ]
    return summary, rows


def library_versions() -> dict:
    import peft
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def write_report(out_dir: Path, results: dict, rows: list[dict]) -> None:
    """Write evaluation_log.csv then results.json, each atomically."""
    results = {**results, "versions": library_versions(), "created_at": dt.datetime.now(dt.timezone.utc)}
    write_csv(Path(out_dir) / "evaluation_log.csv", rows, LOG_COLUMNS)
    write_json(Path(out_dir) / "results.json", results)
