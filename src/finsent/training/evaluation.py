"""Turn model outputs into metrics, error attribution and a run's report (results and per-sentence log)."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import numpy as np

from finsent.core import metrics
from finsent.data.entities import EntityFormat
from finsent.data.labels import LABELS
from finsent.data.splits import LabelledData
from finsent.runs.folder import write_log, write_results


def evaluate_logits(
    logits,
    y_true,
    texts,
    version: str,
    low: float = 0.6,
    high: float = 0.9,
    temperature: float = 1.0,
    sources: list[str] | None = None,
    entities: list[str] | None = None,
) -> tuple[dict, list[dict]]:
    """Metrics dict (pooled, and per source) and one evaluation-log row per sample (per (text, entity) pair, with
    `mixed_accuracy`, for an entity-level set)."""
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
    sources = list(sources) if sources is not None else ["data"] * len(texts)
    summary["per_source"] = metrics.per_source_metrics(y_true, probs, sources, LABELS)
    if entities is not None:
        summary["mixed_accuracy"], summary["n_mixed"] = metrics.mixed_accuracy(texts, entities, y_true, pred)
        for name, part in summary["per_source"].items():
            mine = [i for i, s in enumerate(sources) if s == name]
            part["mixed_accuracy"], part["n_mixed"] = metrics.mixed_accuracy(
                [texts[i] for i in mine], [entities[i] for i in mine], y_true[mine], pred[mine]
            )
    margin = metrics.margins(probs)
    rows = [
        {
            "sample_id": i,
            "source": sources[i],
            "text": texts[i],
            **({"entity": entities[i]} if entities is not None else {}),
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
    """Write the evaluation log then the results (stamped with library versions and time), each atomically."""
    results = {**results, "versions": library_versions(), "created_at": dt.datetime.now(dt.timezone.utc)}
    write_log(out_dir, rows)
    write_results(out_dir, results)


def evaluate_run(predictor, data: LabelledData, out_dir: Path, low: float = 0.6, high: float = 0.9) -> dict:
    """Score labelled data with a run's Predictor (raw logits, no temperature) and write its report to out_dir."""
    info = predictor.info
    logits, _ = predictor.logits(data.inputs(EntityFormat.from_json(info.entity_input)))
    summary, rows = evaluate_logits(
        logits, data.labels, data.texts, info.version, low, high, sources=data.sources, entities=data.entities
    )
    for name, part in summary["per_source"].items():
        part["n_test"] = data.sources.count(name)
    results = {
        "version": info.version,
        "model_name": info.model_name,
        "use_lora": info.use_lora,
        **summary,
        "n_test": len(data),
        "data": data.source,
        "config": {"low_confidence": low, "high_confidence": high, "model_dir": str(predictor.model_dir)},
    }
    write_report(out_dir, results, rows)
    return results
