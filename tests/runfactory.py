"""Run folders written through the real report code from synthetic logits (fast; no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finsent.data.labels import LABELS
from finsent.runs.folder import write_val_logits
from finsent.training.evaluation import evaluate_logits, write_report


def synthetic_logits(n: int, seed: int, accuracy: float = 0.85, scale: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of an over-confident 3-class model that is right about `accuracy` of the time."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(LABELS), size=n, p=[0.2, 0.55, 0.25])
    pred = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, len(LABELS), n)) % len(LABELS))
    logits = rng.normal(0, 1, (n, len(LABELS)))
    logits[np.arange(n), pred] += scale * rng.uniform(0.3, 1.0, n)
    return logits, y


def write_fake_run(
    path: Path,
    version: str,
    seed: int = 0,
    n: int = 120,
    texts: list[str] | None = None,
    accuracy: float = 0.85,
    use_lora: bool = True,
    sources: tuple[str, ...] | None = None,
    entities: list[str] | None = None,
) -> Path:
    """A run folder with results.json, evaluation_log.csv and val_logits.npz like `finsent train` writes.

    sources: name the rows' sources in turn (row i: sources[i % len(sources)]) and write each source's n_train,
    n_val and n_test into per_source, as training on several corpora does; None: one unnamed source ("data").
    entities: an entity-level run: row i is the pair (texts[i], entities[i]) (repeat a text for each of its entities);
    results.json gets task, mixed_accuracy and n_mixed, the log its entity column."""
    path = Path(path)
    logits, y = synthetic_logits(n, seed, accuracy)
    texts = texts or [f"Company {i} reported quarterly figures ({i % 7})." for i in range(n)]
    n_train = 500
    row_sources = [sources[i % len(sources)] for i in range(n)] if sources else None
    summary, rows = evaluate_logits(logits, y, texts, version, sources=row_sources, entities=entities)
    if sources:
        for k, name in enumerate(sources):
            summary["per_source"][name].update(
                n_train=len(range(k, n_train, len(sources))),
                n_val=len(range(k, n, len(sources))),
                n_test=row_sources.count(name),
            )
    val_logits, val_y = synthetic_logits(n, seed + 1000, accuracy)
    path.mkdir(parents=True, exist_ok=True)
    write_val_logits(path, val_logits, val_y)
    results = {
        "version": version,
        "model_name": "synthetic",
        "use_lora": use_lora,
        **summary,
        "trainable_params": 1000,
        "total_params": 100000,
        "trainable_percent": 1.0,
        "train_runtime_s": 12.5,
        "n_train": n_train,
        "n_val": n,
        "n_test": n,
        "data": {"agreement": "all", "seed": seed},
        "config": {"seed": seed},
        "labels": list(LABELS),
        **({"task": "entity"} if entities is not None else {}),
    }
    write_report(path, results, rows)
    return path
