"""The dashboard of an entity-level run: its mixed-accuracy KPI and the mixed-label view, the test texts whose entities
carry different gold labels (where a sentence-level model can be right for one side only), each entity with its true
and predicted label.

An entity run's results.json says `"task": "entity"` and its evaluation log has one row per (text, entity) pair; a
sentence run's log reads with an empty entity column (runs.folder.read_log) and shows none of this."""

from __future__ import annotations

import pandas as pd

from finsent.apps.dashboard.figures import fmt
from finsent.data.entities import ENTITY
from finsent.runs.folder import Run

MAX_MIXED_TEXTS = 500  # texts listed in the mixed-label view (most errors first); the counts cover them all


def is_entity_run(run: Run) -> bool:
    """An entity-level run: results.json says so, or its log names entities."""
    named = "entity" in run.log.columns and bool((run.log["entity"].astype(str) != "").any())
    return run.results.get("task") == ENTITY or named


def text_key(text: str) -> str:
    """Rows of one text: the key core.metrics.mixed_accuracy groups by (whitespace and case folded)."""
    return " ".join(str(text).split()).casefold()


def mixed_rows(log: pd.DataFrame) -> pd.DataFrame:
    """The log rows of texts whose entities carry more than one gold label."""
    key = log["text"].map(text_key)
    labels_per_text = log.groupby(key)["true_label"].transform("nunique")
    return log[labels_per_text > 1].assign(_key=key[labels_per_text > 1])


def mixed_kpi(run: Run) -> dict:
    """The Overview card: accuracy on the entities of mixed-label texts, as results.json stores it."""
    rows = mixed_rows(run.log)
    n = run.results.get("n_mixed", len(rows))
    value = run.results.get("mixed_accuracy")
    if value is None and len(rows):
        value = float(rows["is_correct"].mean())
    note = (
        f"{int(rows['is_correct'].sum())} of {n} entities of texts whose entities disagree"
        if n
        else "no test text whose entities carry different labels"
    )
    return {"label": "Mixed accuracy", "value": fmt(value), "note": note, "key": "mixed_accuracy"}


def mixed_view(run: Run) -> dict:
    """The mixed-label texts of a run, those with the most wrong entities first, each with its entities' labels."""
    rows = mixed_rows(run.log)
    texts = []
    for _, group in rows.groupby("_key", sort=False):
        entities = [
            {
                "entity": str(r["entity"]),
                "true": r["true_label"],
                "pred": r["pred_label"],
                "confidence": float(r["confidence"]),
                "right": bool(r["is_correct"]),
            }
            for _, r in group.iterrows()
        ]
        wrong = sum(not e["right"] for e in entities)
        first = group.iloc[0]
        texts.append({"text": first["text"], "source": str(first["source"]), "entities": entities, "wrong": wrong})
    texts.sort(key=lambda t: -t["wrong"])  # stable: the log's order within each count
    return {
        "texts": texts[:MAX_MIXED_TEXTS],
        "n_texts": len(texts),
        "n_entities": len(rows),
        "n_right": int(rows["is_correct"].sum()),
        "n_with_errors": sum(t["wrong"] > 0 for t in texts),
    }
