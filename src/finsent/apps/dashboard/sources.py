"""The dashboard by training source: each run's metrics and confusion matrix per source, and the runs compared per source.

A run trained on several corpora stores `per_source` in results.json and names each test sentence's source in its
evaluation log; an older run has neither, and its log's one source reads "data"."""

from __future__ import annotations

import pandas as pd

from finsent.apps.dashboard.figures import confusion_figure, delta_cell, fmt, plot_div
from finsent.core.metrics import per_source_metrics
from finsent.data.labels import LABELS
from finsent.runs import comparison
from finsent.runs.folder import SOURCE_METRICS, Run

COUNT_KEYS = ("n_train", "n_val", "n_test")
COMPARED = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))  # per-source metrics in the run comparison
NO_DELTA = {"text": "–", "cls": ""}


def log_sources(log: pd.DataFrame) -> list[str]:
    """The sources of a run's log, in order of first appearance."""
    return list(dict.fromkeys(log["source"].astype(str).tolist()))


def source_metrics(run: Run) -> dict[str, dict]:
    """accuracy, macro_f1, ece, n_train, n_val and n_test of each source of a run.

    From results.json's per_source; where a run has none, computed from its log grouped by `source`. A count
    results.json lacks is the log's (n_test) or, for a run of one source, the pooled one."""
    stored = run.results.get("per_source")
    if not isinstance(stored, dict) or not stored:
        stored = per_source_metrics(run.y_true, run.probs, run.log["source"].astype(str).tolist(), LABELS)
    in_log = run.log["source"].astype(str).value_counts()
    out = {}
    for name, part in stored.items():
        row = {key: part.get(key) for key in SOURCE_METRICS}
        if row["n_test"] is None and name in in_log:
            row["n_test"] = int(in_log[name])
        if len(stored) == 1:
            row.update({key: run.results.get(key) for key in COUNT_KEYS if row[key] is None})
        out[str(name)] = row
    return out


def confusion_counts(log: pd.DataFrame) -> list[list[int]]:
    """The confusion matrix of some log rows (rows: true label, columns: predicted, both in LABELS order)."""
    table = pd.crosstab(log["true_label"], log["pred_label"]).reindex(index=LABELS, columns=LABELS, fill_value=0)
    return table.astype(int).to_numpy().tolist()


def _cells(m: dict, entity: bool = False) -> list[str]:
    return [
        fmt(m.get("accuracy")),
        fmt(m.get("macro_f1")),
        fmt(m.get("ece")),
        *(fmt(m.get(k), ",.0f") for k in COUNT_KEYS),
        *([fmt(m.get("mixed_accuracy"))] if entity else []),
    ]


def sources_view(run: Run, i: int, entity: bool = False) -> dict:
    """The Sources tab of one run: a row of metrics and a confusion matrix per source, the pooled row below; an
    entity run's rows add the accuracy on the entities of mixed-label texts."""
    found = source_metrics(run)
    source = run.log["source"].astype(str)
    charts = []
    for k, name in enumerate(found):
        part = run.log[source == name]
        if len(part):
            fig = confusion_figure(confusion_counts(part), f"{name}: {len(part)} test sentences")
            charts.append(plot_div(fig, f"sources-confusion-{i}-{k}"))
    return {
        "names": list(found),
        "rows": [{"name": name, "cells": _cells(m, entity)} for name, m in found.items()],
        "pooled": _cells(run.results, entity) if len(found) > 1 else None,
        "entity": entity,
        "charts": charts,
        "missing": [name for name in found if not (source == name).any()],
    }


def source_comparison(runs: list[Run]) -> dict:
    """Per-source accuracy and macro-F1 of the baseline (runs[0]) and each later run, with the later run's delta.

    One row per metric of each baseline source that a later run has too; a later run without it shows '–'."""
    found = [source_metrics(r) for r in runs]
    base, others = found[0], found[1:]
    rows = []
    for name, mine in base.items():
        if not any(name in o for o in others):
            continue
        deltas = [
            {d["metric"]: d for d in comparison.metric_deltas(mine, o[name])} if name in o else {} for o in others
        ]
        for key, label in COMPARED:
            rows.append(
                {
                    "cells": [
                        name,
                        label,
                        fmt(mine.get(key)),
                        *(fmt(d[key]["other"]) if key in d else "–" for d in deltas),
                    ],
                    "deltas": [delta_cell(d[key], "+.4f") if key in d else NO_DELTA for d in deltas],
                }
            )
    unshared = [f"{name} ({runs[0].label})" for name in base if not any(name in o for o in others)]
    unshared += [f"{name} ({runs[k].label})" for k, o in enumerate(others, 1) for name in o if name not in base]
    return {"rows": rows, "unshared": unshared}
