"""One self-contained HTML page of model health from run folders: Plotly with its JavaScript inlined once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from markupsafe import Markup

from finsent.apps.dashboard.entities import is_entity_run, mixed_kpi, mixed_view
from finsent.apps.dashboard.figures import (
    ERROR_COLORS,
    ERROR_ORDER,
    calibrated_confidence_figure,
    changes_figure,
    class_balance_figure,
    compare_metrics_figure,
    compare_per_class_figure,
    confidence_figure,
    confusion_figure,
    delta_cell,
    error_rate_figure,
    error_scatter_figure,
    fmt,
    label_quality_figure,
    plot_div,
    reliability_figure,
)
from finsent.apps.dashboard.production import production_view, read_report
from finsent.apps.dashboard.sources import log_sources, source_comparison, sources_view
from finsent.core.logs import warn
from finsent.core.pages import render
from finsent.core.serialization import write_text
from finsent.data.labels import LABELS
from finsent.data.quality import label_issues, label_quality_scores
from finsent.runs import comparison
from finsent.runs.catalog import load_runs
from finsent.runs.folder import Run
from finsent.training.calibration import run_calibration

TABS = (
    ("overview", "Overview"),
    ("sources", "Sources"),
    ("errors", "Error analysis"),
    ("calibration", "Calibration"),
    ("data-quality", "Data quality"),
    ("comparison", "Run comparison"),
    ("production", "Production"),
)
METRIC_FORMATS = {
    "n_test": ",.0f",
    "n_train": ",.0f",
    "train_runtime_s": ",.0f",
    "trainable_percent": ".2f",
    "temperature": ".3f",
}


def kpi(label: str, value: str, note: str = "", key: str = "") -> dict:
    return {"label": label, "value": value, "note": note, "key": key}


def run_heading(run: Run) -> dict:
    r = run.results
    return {
        "label": run.label,
        "model_name": r.get("model_name") or "?",
        "mode": "LoRA" if r.get("use_lora") else "full fine-tuning",
        "created": str(r.get("created_at") or "")[:19].replace("T", " "),
        "path": str(run.path),
    }


def overview_view(run: Run, i: int, cal: dict | None, entity: bool = False) -> dict:
    r = run.results
    n_test = r.get("n_test", len(run.log))
    kpis = [
        kpi("Accuracy", fmt(r["accuracy"]), f"{int(run.log['is_correct'].sum())} of {len(run.log)} right", "accuracy"),
        kpi("Macro-F1", fmt(r["macro_f1"]), "mean F1 of the 3 classes", "macro_f1"),
        *([mixed_kpi(run)] if entity else []),
        kpi("Average confidence", fmt(r.get("avg_confidence")), "mean top-class probability", "avg_confidence"),
        kpi("ECE", fmt(r["ece"]), f"after temperature scaling {fmt(cal['ece_after'])}" if cal else "15 bins", "ece"),
        kpi(
            "Test size",
            fmt(n_test, "d") if isinstance(n_test, int) else fmt(n_test),
            f"train {r.get('n_train', '–')} · val {r.get('n_val', '–')}",
            "n_test",
        ),
        kpi(
            "Trainable",
            f"{fmt(r.get('trainable_percent'), '.2f')} %" if r.get("trainable_percent") is not None else "–",
            f"{r['trainable_params']:,} of {r['total_params']:,} parameters" if r.get("trainable_params") else "",
            "trainable_percent",
        ),
    ]
    charts = [
        plot_div(confidence_figure(run.log), f"overview-confidence-{i}"),
        plot_div(class_balance_figure(run.log), f"overview-balance-{i}"),
        plot_div(confusion_figure(r["confusion_matrix"]), f"overview-confusion-{i}"),
    ]
    return {"kpis": kpis, "charts": charts}


def errors_view(run: Run, i: int, entity: bool = False) -> dict:
    """The Errors tab: error types, the errors table (with the entity of an entity run) and its mixed-label view."""
    log = run.log
    counts = log["error_type"].value_counts()
    errors = log[log["error_type"] != "Correct"].copy()
    errors["_order"] = errors["error_type"].map(ERROR_ORDER)
    errors = errors.sort_values(["_order", "confidence"], ascending=[True, False])
    return {
        "chips": [(t, color, int(counts.get(t, 0))) for t, color in ERROR_COLORS.items()],
        "charts": [
            plot_div(error_scatter_figure(log), f"errors-scatter-{i}"),
            plot_div(error_rate_figure(log), f"errors-rate-{i}"),
        ],
        "rows": [
            {
                "type": e["error_type"],
                "order": ERROR_ORDER[e["error_type"]],
                "color": ERROR_COLORS[e["error_type"]],
                "true": e["true_label"],
                "pred": e["pred_label"],
                "confidence": float(e["confidence"]),
                "margin": float(e["margin"]),
                "id": int(e["sample_id"]),
                "source": str(e["source"]),
                "entity": str(e.get("entity", "")),
                "text": e["text"],
            }
            for _, e in errors.iterrows()
        ],
        "types": [t for t in ERROR_ORDER if t != "Correct"],
        "labels": LABELS,
        "sources": log_sources(log),
        "entity": entity,
        "mixed": mixed_view(run) if entity else None,
    }


def calibration_view(run: Run, i: int, cal: dict | None) -> dict | None:
    if cal is None:
        return None
    source = (
        "fitted now on this run's val_logits.npz"
        if cal["fitted_here"]
        else "fitted at training time on the validation split (stored in results.json)"
    )
    kpis = [
        kpi("Temperature T", fmt(cal["temperature"], ".3f"), source, "temperature"),
        kpi("ECE before", fmt(cal["ece_before"]), "test split, 15 bins", "ece_before"),
        kpi(
            "ECE after",
            fmt(cal["ece_after"]),
            f"test split, probabilities / T; a perfectly calibrated model would show {fmt(cal['ece_floor_after'])} on {len(cal['correct'])} sentences",
            "ece_after",
        ),
        kpi(
            "Validation NLL",
            f"{fmt(cal['val_nll_before'])} → {fmt(cal['val_nll_after'])}",
            "before → after scaling",
            "val_nll",
        ),
    ]
    charts = [
        plot_div(reliability_figure(cal), f"calibration-reliability-{i}"),
        plot_div(calibrated_confidence_figure(cal), f"calibration-confidence-{i}"),
    ]
    return {"kpis": kpis, "charts": charts}


def data_quality_view(run: Run, i: int, entity: bool = False) -> dict:
    issues = label_issues(run.log)
    entity_of = dict(zip(run.log["sample_id"], run.log["entity"].astype(str))) if entity else {}
    quality = label_quality_scores(run.y_true, run.probs)
    flagged = run.log["sample_id"].isin(issues["sample_id"]).to_numpy()
    rows = [
        [
            str(int(x.rank)),
            f"{x.label_quality:.4f}",
            x.given_label,
            x.suggested_label,
            f"{x.suggested_confidence:.3f}",
            str(int(x.sample_id)),
            *([entity_of.get(x.sample_id, "")] if entity else []),
            x.text,
        ]
        for x in issues.itertuples()
    ]
    return {
        "n_issues": len(issues),
        "n": len(run.log),
        "share": f"{len(issues) / max(len(run.log), 1):.1%}",
        "chart": plot_div(label_quality_figure(quality, flagged), f"data-quality-scores-{i}"),
        "columns": [
            "rank",
            "label quality",
            "given label",
            "suggested label",
            "confidence in suggestion",
            "id",
            *(["entity", "text"] if entity else ["sentence"]),
        ],
        "rows": rows,
    }


def comparison_view(runs: list[Run], cals: list[dict | None]) -> dict | None:
    if len(runs) < 2:
        return None
    base, others = runs[0], runs[1:]
    per_other = [comparison.metric_deltas(base.results, o.results) for o in others]
    metric_rows = []
    for k, first in enumerate(per_other[0]):
        spec = METRIC_FORMATS.get(first["metric"], ".4f")
        metric_rows.append(
            {
                "cells": [first["label"], fmt(first["base"], spec), *[fmt(d[k]["other"], spec) for d in per_other]],
                "deltas": [delta_cell(d[k], "+" + spec) for d in per_other],
            }
        )
    pc = [comparison.per_class_deltas(base.results, o.results) for o in others]
    per_class_rows = [
        {
            "cells": [first["label"], first["metric"], fmt(first["base"]), *[fmt(d[k]["other"]) for d in pc]],
            "deltas": [delta_cell(d[k], "+.4f") for d in pc],
        }
        for k, first in enumerate(pc[0])
    ]
    pairs, sections = [], []
    for o in others:
        changes = comparison.prediction_changes(base.log, o.log)
        counts = comparison.change_counts(changes)
        name = f"{base.label} → {o.label}"
        pairs.append((name, counts))
        sections.append(
            {
                "name": name,
                "counts": counts,
                "n": len(changes),
                "other": o.label,
                "entity": is_entity_run(base) or is_entity_run(o),
                "flips": list(comparison.flipped(changes).itertuples()),
            }
        )
    return {
        "base": base.label,
        "others": [o.label for o in others],
        "charts": [
            plot_div(compare_metrics_figure(runs, cals), "comparison-metrics"),
            plot_div(compare_per_class_figure(runs), "comparison-per-class"),
            plot_div(changes_figure(pairs), "comparison-changes"),
        ],
        "metric_rows": metric_rows,
        "per_class_rows": per_class_rows,
        "by_source": source_comparison(runs),
        "sections": sections,
    }


def build_html(
    runs: list[Run], warnings: list[str] | None = None, title: str = "finsent model health", reports: list[dict] = ()
) -> str:
    """The whole page as one string: plotly.js inlined once, every view as a tab, per-run panels behind a picker;
    the Production tab draws the monitor reports given."""
    from plotly.offline import get_plotlyjs

    from finsent import __version__ as finsent_version

    cals = [run_calibration(r.results, r.val_logits, r.probs, r.y_true) for r in runs]
    entity = [is_entity_run(r) for r in runs]
    panels = [
        {
            "heading": run_heading(run),
            "overview": overview_view(run, i, cal, entity[i]),
            "sources": sources_view(run, i, entity[i]),
            "errors": errors_view(run, i, entity[i]),
            "calibration": calibration_view(run, i, cal),
            "data_quality": data_quality_view(run, i, entity[i]),
        }
        for i, (run, cal) in enumerate(zip(runs, cals))
    ]
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return render(
        "dashboard.html.j2",
        title=title,
        meta=f"{len(runs)} run{'s' if len(runs) != 1 else ''}: {', '.join(r.label for r in runs)} · generated {generated} by finsent {finsent_version}",
        plotly_js=Markup(get_plotlyjs()),
        tabs=TABS,
        run_options=[
            f"{r.label} · {'LoRA' if r.results.get('use_lora') else 'full'} · acc {fmt(r.results['accuracy'], '.3f')}"
            for r in runs
        ],
        panels=panels,
        comparison=comparison_view(runs, cals),
        production_blocks=production_view(list(reports)),
        warnings=warnings or [],
        run_data=[{"label": r.label, "path": str(r.path)} for r in runs],
    )


def write_dashboard(
    dirs: list[str | Path], out: Path, on_warning: Callable[[str], None] = warn, monitor: list[str] | None = None
) -> tuple[Path, list[Run]]:
    """Load the runs (warning for and skipping unreadable ones) and the monitor reports, build the page, write it
    atomically."""
    skipped: list[str] = []

    def note(message: str) -> None:
        skipped.append(message)
        on_warning(message)

    reports = [read_report(path) for path in monitor or []]
    runs = load_runs(dirs, note)
    page = build_html(runs, skipped, reports=reports)
    write_text(Path(out), page)
    return Path(out), runs
