"""One self-contained HTML page of model health from run folders: Plotly with its JavaScript inlined once."""

from __future__ import annotations

import datetime as dt
import html
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from finsent import comparison
from finsent.calibration import run_calibration
from finsent.data import LABELS
from finsent.data_quality import label_issues, label_quality_scores
from finsent.runs import Run, load_runs, warn
from finsent.serialization import write_text

TABS = (
    ("overview", "Overview"),
    ("errors", "Error analysis"),
    ("calibration", "Calibration"),
    ("data-quality", "Data quality"),
    ("comparison", "Run comparison"),
)
ERROR_COLORS = {
    "Correct": "#43a047",
    "Low Confidence": "#fbc02d",
    "Misclassification": "#fb8c00",
    "High-Confidence Error": "#d32f2f",
}
ERROR_ORDER = {"High-Confidence Error": 0, "Misclassification": 1, "Low Confidence": 2, "Correct": 3}
RUN_COLORS = ("#1e88e5", "#8e24aa", "#00897b", "#f4511e", "#6d4c41", "#3949ab")
METRIC_FORMATS = {
    "n_test": ",.0f",
    "n_train": ",.0f",
    "train_runtime_s": ",.0f",
    "trainable_percent": ".2f",
    "temperature": ".3f",
}
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12, "color": "#263238"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "margin": {"l": 60, "r": 20, "t": 70, "b": 50},
        "xaxis": {"gridcolor": "#eceff1", "zerolinecolor": "#cfd8dc", "automargin": True},
        "yaxis": {"gridcolor": "#eceff1", "zerolinecolor": "#cfd8dc", "automargin": True},
        "legend": {
            "orientation": "h",
            "x": 1,
            "xanchor": "right",
            "y": 1.0,
            "yanchor": "bottom",
            "bgcolor": "rgba(255,255,255,0)",
        },
        "title": {"x": 0.02, "y": 0.97, "yanchor": "top", "font": {"size": 14}},
        "hoverlabel": {"align": "left"},
    }
)


# ---- figures (pure: data in, plotly figure out) ----------------------------------------------------------


def _layout(fig: go.Figure, title: str, height: int = 360, **kw) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=title, height=height, **kw)
    return fig


def wrap(text: str, width: int = 80) -> str:
    """Escape a sentence for a Plotly hover label and break it into lines."""
    return "<br>".join(textwrap.wrap(html.escape(str(text)), width)) or "&nbsp;"


def confidence_figure(log: pd.DataFrame) -> go.Figure:
    """Histogram of the top-class probability, correct and wrong predictions stacked."""
    fig = go.Figure()
    for ok, name, color in (
        (True, "correct", ERROR_COLORS["Correct"]),
        (False, "wrong", ERROR_COLORS["High-Confidence Error"]),
    ):
        part = log[log["is_correct"] == ok]
        fig.add_trace(
            go.Histogram(
                x=part["confidence"],
                name=f"{name} ({len(part)})",
                marker_color=color,
                xbins={"start": 0.0, "end": 1.0001, "size": 0.025},
            )
        )
    return _layout(
        fig,
        "Confidence distribution",
        barmode="stack",
        xaxis_title="confidence (top-class probability)",
        yaxis_title="sentences (log scale)",
        yaxis_type="log",
        yaxis_dtick=1,
        xaxis_range=[0.3, 1.01],
    )


def class_balance_figure(log: pd.DataFrame) -> go.Figure:
    true = log["true_label"].value_counts().reindex(LABELS, fill_value=0)
    pred = log["pred_label"].value_counts().reindex(LABELS, fill_value=0)
    fig = go.Figure(
        [
            go.Bar(x=list(LABELS), y=true.to_numpy(), name="true", marker_color="#546e7a", text=true.to_numpy()),
            go.Bar(x=list(LABELS), y=pred.to_numpy(), name="predicted", marker_color="#42a5f5", text=pred.to_numpy()),
        ]
    )
    return _layout(fig, "Class balance: true vs predicted", barmode="group", yaxis_title="sentences")


def confusion_figure(confusion: list[list[int]]) -> go.Figure:
    cm = np.asarray(confusion)
    row_share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    text = [[f"{cm[i, j]}<br>{row_share[i, j]:.0%}" for j in range(len(LABELS))] for i in range(len(LABELS))]
    fig = go.Figure(
        go.Heatmap(
            z=row_share,
            x=list(LABELS),
            y=list(LABELS),
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            customdata=cm,
            colorbar={"title": "share of row"},
            hovertemplate="true %{y} → predicted %{x}: %{customdata} sentences (%{z:.1%} of the row)<extra></extra>",
        )
    )
    return _layout(
        fig,
        "Confusion matrix (rows: true, columns: predicted)",
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
    )


def error_scatter_figure(log: pd.DataFrame) -> go.Figure:
    """Confidence vs margin, one trace per error type, the sentence on hover."""
    fig = go.Figure()
    for etype, color in ERROR_COLORS.items():
        part = log[log["error_type"] == etype]
        if part.empty:
            continue
        custom = np.stack(
            [part["text"].map(wrap), part["true_label"], part["pred_label"], part["sample_id"].astype(str)], axis=1
        )
        fig.add_trace(
            go.Scatter(
                x=part["confidence"],
                y=part["margin"],
                mode="markers",
                name=f"{etype} ({len(part)})",
                customdata=custom,
                marker={
                    "color": color,
                    "size": 8 if etype != "Correct" else 6,
                    "opacity": 0.8 if etype != "Correct" else 0.45,
                    "line": {"width": 0.5, "color": "white"},
                },
                hovertemplate="<b>#%{customdata[3]}</b> true <b>%{customdata[1]}</b> → predicted <b>%{customdata[2]}</b><br>"
                "confidence %{x:.3f} · margin %{y:.3f}<br>%{customdata[0]}<extra>" + etype + "</extra>",
            )
        )
    return _layout(
        fig,
        "Confidence vs margin by error type (hover for the sentence)",
        height=440,
        xaxis_title="confidence",
        yaxis_title="margin (top − second probability)",
    )


def error_rate_figure(log: pd.DataFrame) -> go.Figure:
    """Share of each true class predicted wrongly, and share of each predicted class that is wrong."""
    wrong = ~log["is_correct"]
    by_true = log.groupby("true_label")["is_correct"].agg(["size", "sum"]).reindex(LABELS, fill_value=0)
    by_pred = log.groupby("pred_label")["is_correct"].agg(["size", "sum"]).reindex(LABELS, fill_value=0)
    fig = go.Figure()
    for name, table, color in (
        ("missed (by true label)", by_true, "#e53935"),
        ("false alarms (by predicted label)", by_pred, "#ffb300"),
    ):
        n, ok = table["size"].to_numpy(), table["sum"].to_numpy()
        rate = np.where(n > 0, (n - ok) / np.maximum(n, 1), 0.0)
        fig.add_trace(
            go.Bar(
                x=list(LABELS),
                y=rate,
                name=name,
                marker_color=color,
                text=[f"{r:.1%} ({w}/{t})" for r, w, t in zip(rate, n - ok, n)],
                textposition="outside",
                hovertemplate="%{x}: %{text}<extra>" + name + "</extra>",
            )
        )
    top = max(0.05, float(np.max([t.y for t in fig.data])) * 1.3) if int(wrong.sum()) else 0.05
    return _layout(
        fig,
        "Error rate per class",
        barmode="group",
        yaxis_tickformat=".0%",
        yaxis_range=[0, top],
        yaxis_title="error rate",
    )


def reliability_figure(cal: dict) -> go.Figure:
    """Reliability diagram: accuracy against mean confidence per bin, before and after temperature scaling."""
    fig = go.Figure(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfect calibration",
            line={"dash": "dash", "color": "#90a4ae"},
            hoverinfo="skip",
        )
    )
    for key, name, color in (
        ("bins_before", f"before (ECE {cal['ece_before']:.4f})", "#d32f2f"),
        ("bins_after", f"after T={cal['temperature']:.2f} (ECE {cal['ece_after']:.4f})", "#1e88e5"),
    ):
        bins = cal[key]
        counts = np.array([b["count"] for b in bins])
        fig.add_trace(
            go.Scatter(
                x=[b["confidence"] for b in bins],
                y=[b["accuracy"] for b in bins],
                mode="markers",
                name=name,
                customdata=np.stack([counts, [f"{b['lower']:.2f}–{b['upper']:.2f}" for b in bins]], axis=1),
                marker={"size": 6 + 18 * np.sqrt(counts / max(counts.max(), 1)), "color": color, "opacity": 0.8},
                hovertemplate="bin %{customdata[1]}: %{customdata[0]} sentences<br>mean confidence %{x:.3f}<br>accuracy %{y:.3f}<extra></extra>",
            )
        )
    return _layout(
        fig,
        "Reliability diagram (marker size: sentences per bin)",
        height=420,
        xaxis_title="mean confidence in bin",
        yaxis_title="accuracy in bin",
        xaxis_range=[0, 1.02],
        yaxis_range=[0, 1.02],
    )


def calibrated_confidence_figure(cal: dict) -> go.Figure:
    fig = go.Figure()
    for key, name, color in (
        ("confidence_before", "before", "#d32f2f"),
        ("confidence_after", "after temperature scaling", "#1e88e5"),
    ):
        fig.add_trace(
            go.Histogram(
                x=cal[key],
                name=name,
                marker_color=color,
                opacity=0.6,
                xbins={"start": 0.0, "end": 1.0001, "size": 0.025},
            )
        )
    return _layout(
        fig,
        "Confidence before and after temperature scaling",
        barmode="overlay",
        yaxis_type="log",
        yaxis_dtick=1,
        xaxis_title="confidence",
        yaxis_title="sentences (log scale)",
        xaxis_range=[0.3, 1.01],
    )


def label_quality_figure(quality: np.ndarray, flagged: np.ndarray) -> go.Figure:
    fig = go.Figure()
    for mask, name, color in ((~flagged, "not flagged", "#78909c"), (flagged, "suspected label issue", "#d32f2f")):
        fig.add_trace(
            go.Histogram(
                x=quality[mask],
                name=f"{name} ({int(mask.sum())})",
                marker_color=color,
                xbins={"start": 0.0, "end": 1.0001, "size": 0.025},
            )
        )
    return _layout(
        fig,
        "Label quality score (probability of the given label, out-of-sample)",
        barmode="stack",
        yaxis_type="log",
        yaxis_dtick=1,
        xaxis_title="label quality",
        yaxis_title="sentences (log scale)",
    )


def compare_metrics_figure(runs: list[Run], cals: list[dict | None]) -> go.Figure:
    """Quality metrics (left) and calibration error before/after temperature scaling (right, own scale)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.62, 0.38],
        horizontal_spacing=0.1,
        subplot_titles=("accuracy, macro-F1, confidence", "ECE (lower is better)"),
    )
    quality = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("avg_confidence", "avg confidence"))
    for i, (r, cal) in enumerate(zip(runs, cals)):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        y = [r.results.get(k) for k, _ in quality]
        fig.add_trace(
            go.Bar(
                x=[name for _, name in quality],
                y=y,
                name=r.label,
                marker_color=color,
                legendgroup=r.label,
                text=[fmt(v, ".3f") for v in y],
                textposition="outside",
            ),
            row=1,
            col=1,
        )
        ece = [r.results.get("ece"), cal["ece_after"] if cal else None]
        fig.add_trace(
            go.Bar(
                x=["ECE", "ECE after T"],
                y=ece,
                name=r.label,
                marker_color=color,
                legendgroup=r.label,
                showlegend=False,
                text=[fmt(v, ".3f") for v in ece],
                textposition="outside",
            ),
            row=1,
            col=2,
        )
    fig.update_yaxes(range=[0, 1.12], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_annotations(font_size=12)
    _layout(fig, "Headline metrics per run", barmode="group")
    return fig.update_layout(legend={"y": -0.12, "yanchor": "top", "x": 0.5, "xanchor": "center"}, margin={"b": 70})


def compare_per_class_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    for i, r in enumerate(runs):
        y = [r.results["per_class"][label]["f1"] for label in LABELS]
        fig.add_trace(
            go.Bar(
                x=list(LABELS),
                y=y,
                name=r.label,
                marker_color=RUN_COLORS[i % len(RUN_COLORS)],
                text=[f"{v:.3f}" for v in y],
                textposition="outside",
            )
        )
    return _layout(fig, "F1 per class and run", barmode="group", yaxis_range=[0, 1.1], yaxis_title="F1")


def changes_figure(pairs: list[tuple[str, dict]]) -> go.Figure:
    colors = {"fixed": "#43a047", "broken": "#d32f2f", "changed": "#fb8c00"}
    fig = go.Figure()
    for kind, color in colors.items():
        y = [counts[kind] for _, counts in pairs]
        fig.add_trace(
            go.Bar(x=[name for name, _ in pairs], y=y, name=kind, marker_color=color, text=y, textposition="outside")
        )
    return _layout(
        fig, "Sentences whose prediction changed", barmode="group", yaxis_title="sentences", yaxis_rangemode="tozero"
    )


# ---- HTML ------------------------------------------------------------------------------------------------


def esc(value) -> str:
    return html.escape(str(value))


def fmt(value, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return (
        format(value, spec)
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        else str(value)
    )


def fmt_delta(delta, improved, spec: str = "+.4f") -> str:
    if delta is None:
        return "<td>–</td>"
    cls = "" if improved is None else (' class="up"' if improved else ' class="down"')
    return f"<td{cls}>{format(delta, spec)}</td>"


def plot_div(fig: go.Figure, div_id: str) -> str:
    return f'<div class="chart">{pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)}</div>'


def kpi(label: str, value: str, note: str = "", key: str = "") -> str:
    return (
        f'<div class="kpi" data-kpi="{esc(key)}"><div class="kpi-label">{esc(label)}</div>'
        f'<div class="kpi-value">{esc(value)}</div><div class="kpi-note">{esc(note)}</div></div>'
    )


def table(
    columns: list[str], rows: list[list[str]], cls: str = "", row_attrs: list[str] | None = None, raw: bool = False
) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        attrs = f" {row_attrs[i]}" if row_attrs else ""
        cells = "".join(cell if raw and cell.startswith("<td") else f"<td>{esc(cell)}</td>" for cell in row)
        body.append(f"<tr{attrs}>{cells}</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def run_heading(run: Run) -> str:
    r = run.results
    mode = "LoRA" if r.get("use_lora") else "full fine-tuning"
    created = str(r.get("created_at") or "")[:19].replace("T", " ")
    return (
        f'<p class="run-meta"><b>{esc(run.label)}</b> · {esc(r.get("model_name") or "?")} · {mode} · '
        f"trained {esc(created)} UTC · <code>{esc(run.path)}</code></p>"
    )


def overview_panel(run: Run, i: int, cal: dict | None) -> str:
    r = run.results
    n_test = r.get("n_test", len(run.log))
    cards = "".join(
        [
            kpi(
                "Accuracy",
                fmt(r["accuracy"]),
                f"{int(run.log['is_correct'].sum())} of {len(run.log)} right",
                "accuracy",
            ),
            kpi("Macro-F1", fmt(r["macro_f1"]), "mean F1 of the 3 classes", "macro_f1"),
            kpi("Average confidence", fmt(r.get("avg_confidence")), "mean top-class probability", "avg_confidence"),
            kpi(
                "ECE", fmt(r["ece"]), f"after temperature scaling {fmt(cal['ece_after'])}" if cal else "15 bins", "ece"
            ),
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
    )
    charts = "".join(
        [
            plot_div(confidence_figure(run.log), f"overview-confidence-{i}"),
            plot_div(class_balance_figure(run.log), f"overview-balance-{i}"),
            plot_div(confusion_figure(r["confusion_matrix"]), f"overview-confusion-{i}"),
        ]
    )
    return f'{run_heading(run)}<div class="kpis">{cards}</div><div class="grid">{charts}</div>'


def error_table(log: pd.DataFrame, i: int) -> str:
    errors = log[log["error_type"] != "Correct"].copy()
    errors["_order"] = errors["error_type"].map(ERROR_ORDER)
    errors = errors.sort_values(["_order", "confidence"], ascending=[True, False])
    rows, attrs = [], []
    for _, e in errors.iterrows():
        rows.append(
            [
                f'<td data-sort="{ERROR_ORDER[e["error_type"]]}"><span class="tag" style="background:{ERROR_COLORS[e["error_type"]]}">{esc(e["error_type"])}</span></td>',
                f"<td>{esc(e['true_label'])}</td>",
                f"<td>{esc(e['pred_label'])}</td>",
                f'<td data-sort="{e["confidence"]:.6f}">{e["confidence"]:.3f}</td>',
                f'<td data-sort="{e["margin"]:.6f}">{e["margin"]:.3f}</td>',
                f'<td data-sort="{int(e["sample_id"])}">{int(e["sample_id"])}</td>',
                f'<td class="text">{esc(e["text"])}</td>',
            ]
        )
        attrs.append(
            f'data-type="{esc(e["error_type"])}" data-true="{esc(e["true_label"])}" data-pred="{esc(e["pred_label"])}"'
        )

    def select(name: str, options) -> str:
        opts = "".join(f'<option value="{esc(o)}">{esc(o)}</option>' for o in options)
        return f'<label>{name} <select data-filter="{name.split()[0].lower()}"><option value="">all</option>{opts}</select></label>'

    types = [t for t in ERROR_ORDER if t != "Correct"]
    controls = (
        f'<div class="filters">{select("type", types)}{select("true label", LABELS)}{select("predicted label", LABELS)}'
        f'<label>text <input type="search" data-filter="text" placeholder="contains…"></label>'
        f'<span class="count" data-count>{len(rows)} of {len(rows)}</span></div>'
    )
    tbl = (
        '<div class="scroll">'
        + table(
            ["type", "true", "predicted", "confidence", "margin", "id", "sentence"],
            rows,
            "sortable errors",
            attrs,
            raw=True,
        )
        + "</div>"
    )
    note = "" if rows else '<p class="note">No errors or low-confidence predictions in this run.</p>'
    return f'<div class="error-table" id="errors-table-{i}">{controls}{tbl}{note}</div>'


def errors_panel(run: Run, i: int) -> str:
    counts = run.log["error_type"].value_counts()
    chips = " ".join(
        f'<span class="tag" style="background:{c}">{esc(t)}: {int(counts.get(t, 0))}</span>'
        for t, c in ERROR_COLORS.items()
    )
    return (
        f'{run_heading(run)}<p>{chips}</p><div class="grid">'
        f"{plot_div(error_scatter_figure(run.log), f'errors-scatter-{i}')}{plot_div(error_rate_figure(run.log), f'errors-rate-{i}')}</div>"
        f"<h3>Errors and low-confidence predictions (High-Confidence Errors first; click a heading to sort)</h3>{error_table(run.log, i)}"
    )


def calibration_panel(run: Run, i: int, cal: dict | None) -> str:
    if cal is None:
        return f'{run_heading(run)}<p class="note">No temperature in results.json and no val_logits.npz in this run folder: retrain with this finsent version to calibrate.</p>'
    source = (
        "fitted now on this run's val_logits.npz"
        if cal["fitted_here"]
        else "fitted at training time on the validation split (stored in results.json)"
    )
    cards = "".join(
        [
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
    )
    return (
        f'{run_heading(run)}<div class="kpis">{cards}</div><div class="grid">'
        f"{plot_div(reliability_figure(cal), f'calibration-reliability-{i}')}"
        f"{plot_div(calibrated_confidence_figure(cal), f'calibration-confidence-{i}')}</div>"
        f'<p class="note">Temperature scaling divides the logits by T before the softmax: predictions and accuracy do not '
        f"change, only the confidence. T &gt; 1 softens an over-confident model, T &lt; 1 sharpens an under-confident one. The serving side reads <code>temperature</code> from results.json.</p>"
    )


def data_quality_panel(run: Run, i: int) -> str:
    issues = label_issues(run.log)
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
            x.text,
        ]
        for x in issues.itertuples()
    ]
    tbl = (
        '<div class="scroll">'
        + table(
            ["rank", "label quality", "given label", "suggested label", "confidence in suggestion", "id", "sentence"],
            rows,
            "issues",
        )
        + "</div>"
        if rows
        else '<p class="note">cleanlab found no suspected label issue in this run\'s test split.</p>'
    )
    return (
        f"{run_heading(run)}<p>cleanlab (confident learning) on the out-of-sample test-split probabilities flags "
        f"<b>{len(issues)}</b> of {len(run.log)} sentences ({len(issues) / max(len(run.log), 1):.1%}) whose given label "
        f"the model finds unlikely. Ranked most suspicious first; review them before trusting the errors they cause.</p>"
        f'<div class="grid">{plot_div(label_quality_figure(quality, flagged), f"data-quality-scores-{i}")}</div>'
        f'<div class="issues" id="data-quality-table-{i}">{tbl}</div>'
    )


def comparison_panel(runs: list[Run], cals: list[dict | None]) -> str:
    if len(runs) < 2:
        return '<p class="note">Pass two or more run folders to <code>finsent dashboard --runs</code> to compare versions.</p>'
    base, others = runs[0], runs[1:]
    # metrics side by side, deltas against the first run
    per_other = [comparison.metric_deltas(base.results, o.results) for o in others]
    keys = [row["metric"] for row in per_other[0]]
    rows = []
    for k, key in enumerate(keys):
        first = per_other[0][k]
        spec = METRIC_FORMATS.get(key, ".4f")
        cells = [f"<td>{esc(first['label'])}</td>", f"<td>{fmt(first['base'], spec)}</td>"]
        cells += [f"<td>{fmt(d[k]['other'], spec)}</td>" for d in per_other]
        cells += [fmt_delta(d[k]["delta"], d[k]["improved"], "+" + spec) for d in per_other]
        rows.append(cells)
    cols = ["metric", base.label, *[o.label for o in others], *[f"Δ {o.label} − {base.label}" for o in others]]
    metrics_table = table(cols, rows, "compare", raw=True)
    # per class
    pc = [comparison.per_class_deltas(base.results, o.results) for o in others]
    pc_rows = []
    for k, first in enumerate(pc[0]):
        cells = [
            f"<td>{esc(first['label'])}</td>",
            f"<td>{esc(first['metric'])}</td>",
            f"<td>{fmt(first['base'])}</td>",
        ]
        cells += [f"<td>{fmt(d[k]['other'])}</td>" for d in pc]
        cells += [fmt_delta(d[k]["delta"], d[k]["improved"]) for d in pc]
        pc_rows.append(cells)
    pc_table = table(
        ["class", "metric", base.label, *[o.label for o in others], *[f"Δ {o.label}" for o in others]],
        pc_rows,
        "compare",
        raw=True,
    )
    # changed predictions
    pairs, sections = [], []
    for j, o in enumerate(others, start=1):
        changes = comparison.prediction_changes(base.log, o.log)
        counts = comparison.change_counts(changes)
        name = f"{base.label} → {o.label}"
        pairs.append((name, counts))
        flips = comparison.flipped(changes)
        frows = [
            [
                f'<td><span class="tag {esc(c.kind)}">{esc(c.kind)}</span></td>',
                f"<td>{esc(c.true_label)}</td>",
                f"<td>{esc(c.pred_label_base)} ({c.confidence_base:.2f})</td>",
                f"<td>{esc(c.pred_label_other)} ({c.confidence_other:.2f})</td>",
                f'<td class="text">{esc(c.text)}</td>',
            ]
            for c in flips.itertuples()
        ]
        ftable = (
            '<div class="scroll">'
            + table(
                ["change", "true", f"{base.label} predicted", f"{o.label} predicted", "sentence"],
                frows,
                "sortable flips",
                raw=True,
            )
            + "</div>"
            if frows
            else '<p class="note">No prediction changed.</p>'
        )
        sections.append(
            f"<h3>{esc(name)}: {counts['fixed']} fixed, {counts['broken']} broken, {counts['changed']} changed, "
            f"{counts['same']} unchanged of {len(changes)} sentences scored by both</h3>"
            f'<div class="flips-wrap" id="comparison-flips-{j}">{ftable}</div>'
        )
    return (
        f"<p>Baseline <b>{esc(base.label)}</b>; deltas are later run minus baseline (green: better, red: worse; for ECE lower is better).</p>"
        f'<div class="grid">{plot_div(compare_metrics_figure(runs, cals), "comparison-metrics")}'
        f"{plot_div(compare_per_class_figure(runs), 'comparison-per-class')}"
        f"{plot_div(changes_figure(pairs), 'comparison-changes')}</div>"
        f"<h3>Metrics side by side</h3>{metrics_table}<h3>Per-class deltas</h3>{pc_table}{''.join(sections)}"
    )


CSS = """
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#263238;background:#f5f7f9}
header{background:#102a43;color:#fff;padding:14px 24px 0}
header h1{font-size:20px;margin:0 0 4px}header .meta{font-size:12px;opacity:.8}
.bar{display:flex;align-items:flex-end;gap:24px;flex-wrap:wrap;margin-top:10px}
nav.tabs{display:flex;gap:2px}nav.tabs button{background:#243b53;color:#d9e2ec;border:0;padding:9px 16px;border-radius:6px 6px 0 0;cursor:pointer;font-size:14px}
nav.tabs button.active{background:#f5f7f9;color:#102a43;font-weight:600}
.run-picker{margin-bottom:8px;font-size:13px}.run-picker select{font-size:13px;padding:3px 6px;margin-left:6px}
main{padding:16px 24px 40px}section.tab{display:none}section.tab.active{display:block}
.run-panel{display:none}.run-panel.active{display:block}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin:8px 0 16px}
.kpi{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.kpi-label{font-size:12px;color:#607d8b;text-transform:uppercase;letter-spacing:.04em}.kpi-value{font-size:26px;font-weight:600;color:#102a43}
.kpi-note{font-size:12px;color:#78909c}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:12px}
.chart{background:#fff;border-radius:8px;padding:6px;box-shadow:0 1px 2px rgba(0,0,0,.08);min-width:0}
table{border-collapse:collapse;background:#fff;width:100%;margin:8px 0 18px;box-shadow:0 1px 2px rgba(0,0,0,.08);font-size:13px}
th,td{padding:6px 8px;border-bottom:1px solid #eceff1;text-align:left;vertical-align:top}th{background:#eef2f5;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:' ⇅';color:#b0bec5}
table.sortable th.asc:after{content:' ▲';color:#102a43}table.sortable th.desc:after{content:' ▼';color:#102a43}
td.text{max-width:760px}td.up{color:#2e7d32;font-weight:600}td.down{color:#c62828;font-weight:600}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;white-space:nowrap;background:#78909c}
.tag.fixed{background:#43a047}.tag.broken{background:#d32f2f}.tag.changed{background:#fb8c00}
.filters{display:flex;gap:14px;flex-wrap:wrap;align-items:center;margin:6px 0}.filters select,.filters input{font-size:13px;padding:3px}
.count{color:#607d8b}.note{color:#607d8b}.run-meta{color:#455a64;margin:4px 0}
.warnings{background:#fff3e0;border-left:4px solid #fb8c00;padding:8px 12px;margin-bottom:12px}
.scroll{max-height:620px;overflow:auto;margin:8px 0 18px;box-shadow:0 1px 2px rgba(0,0,0,.08)}.scroll table{margin:0;box-shadow:none}
code{font-size:12px;background:#eceff1;padding:1px 4px;border-radius:3px}
"""

JS = """
(function(){
  function resizeVisible(){
    document.querySelectorAll('section.tab.active .js-plotly-plot').forEach(function(el){
      if (el.offsetParent !== null) { Plotly.Plots.resize(el); }
    });
  }
  function showTab(id){
    document.querySelectorAll('section.tab').forEach(function(s){ s.classList.toggle('active', s.id === id); });
    document.querySelectorAll('nav.tabs button').forEach(function(b){ b.classList.toggle('active', b.dataset.tab === id); });
    document.getElementById('run-picker').style.visibility = id === 'comparison' ? 'hidden' : 'visible';
    if (history.replaceState) { history.replaceState(null, '', '#' + id); }
    resizeVisible();
  }
  function showRun(i){
    document.querySelectorAll('.run-panel').forEach(function(p){ p.classList.toggle('active', p.dataset.run === String(i)); });
    resizeVisible();
  }
  document.querySelectorAll('nav.tabs button').forEach(function(b){ b.addEventListener('click', function(){ showTab(b.dataset.tab); }); });
  document.getElementById('run-select').addEventListener('change', function(e){ showRun(e.target.value); });
  // sortable tables: click a heading; cells may carry data-sort with the value to sort by
  document.querySelectorAll('table.sortable').forEach(function(table){
    table.querySelectorAll('th').forEach(function(th, col){
      th.addEventListener('click', function(){
        var asc = !th.classList.contains('asc');
        table.querySelectorAll('th').forEach(function(h){ h.classList.remove('asc', 'desc'); });
        th.classList.add(asc ? 'asc' : 'desc');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        function key(r){ var c = r.cells[col]; var v = c.dataset.sort !== undefined ? c.dataset.sort : c.textContent; var n = parseFloat(v); return isNaN(n) ? v.toLowerCase() : n; }
        rows.sort(function(a, b){ var x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
  // error-table filters: by type, true label, predicted label and text
  document.querySelectorAll('.error-table').forEach(function(box){
    var controls = box.querySelectorAll('[data-filter]');
    function apply(){
      var f = {}; controls.forEach(function(c){ f[c.dataset.filter] = c.value.toLowerCase(); });
      var shown = 0, rows = box.querySelectorAll('tbody tr');
      rows.forEach(function(r){
        var ok = (!f.type || r.dataset.type.toLowerCase() === f.type) && (!f.true || r.dataset.true === f.true) &&
                 (!f.predicted || r.dataset.pred === f.predicted) && (!f.text || r.textContent.toLowerCase().indexOf(f.text) >= 0);
        r.style.display = ok ? '' : 'none'; if (ok) { shown++; }
      });
      box.querySelector('[data-count]').textContent = shown + ' of ' + rows.length;
    }
    controls.forEach(function(c){ c.addEventListener('input', apply); c.addEventListener('change', apply); });
  });
  var start = location.hash.slice(1);
  showRun(0);
  showTab(document.getElementById(start) && document.getElementById(start).classList.contains('tab') ? start : 'overview');
})();
"""


def build_html(runs: list[Run], warnings: list[str] | None = None, title: str = "finsent model health") -> str:
    """The whole page as one string: plotly.js inlined once, every view as a tab, per-run panels behind a picker."""
    from plotly.offline import get_plotlyjs

    from finsent import __version__ as finsent_version

    cals = [run_calibration(r.results, r.val_logits, r.probs, r.y_true) for r in runs]
    panels = {tab: [] for tab, _ in TABS}
    for i, (run, cal) in enumerate(zip(runs, cals)):
        for tab, body in (
            ("overview", overview_panel(run, i, cal)),
            ("errors", errors_panel(run, i)),
            ("calibration", calibration_panel(run, i, cal)),
            ("data-quality", data_quality_panel(run, i)),
        ):
            panels[tab].append(f'<div class="run-panel" data-run="{i}">{body}</div>')
    panels["comparison"].append(comparison_panel(runs, cals))
    options = "".join(
        f'<option value="{i}">{esc(r.label)} · {"LoRA" if r.results.get("use_lora") else "full"} · '
        f"acc {fmt(r.results['accuracy'], '.3f')}</option>"
        for i, r in enumerate(runs)
    )
    nav = "".join(f'<button data-tab="{tab}">{esc(name)}</button>' for tab, name in TABS)
    sections = "".join(f'<section class="tab" id="{tab}">{"".join(panels[tab])}</section>' for tab, _ in TABS)
    warn_html = (
        ('<div class="warnings" id="warnings"><b>Skipped:</b><br>' + "<br>".join(esc(w) for w in warnings) + "</div>")
        if warnings
        else ""
    )
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"{len(runs)} run{'s' if len(runs) != 1 else ''}: {', '.join(r.label for r in runs)} · generated {generated} by finsent {finsent_version}"
    run_data = json.dumps([{"label": r.label, "path": str(r.path)} for r in runs]).replace("</", "<\\/")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>"
        f'<header><h1>{esc(title)}</h1><div class="meta">{esc(meta)}</div><div class="bar"><nav class="tabs">{nav}</nav>'
        f'<div class="run-picker" id="run-picker"><label>Run<select id="run-select">{options}</select></label></div></div></header>'
        f'<main>{warn_html}{sections}</main><script id="finsent-runs" type="application/json">{run_data}</script>'
        f"<script>{JS}</script></body></html>"
    )


def write_dashboard(
    dirs: list[str | Path], out: Path, on_warning: Callable[[str], None] = warn
) -> tuple[Path, list[Run]]:
    """Load the runs (warning for and skipping unreadable ones), build the page and write it atomically."""
    skipped: list[str] = []

    def note(message: str) -> None:
        skipped.append(message)
        on_warning(message)

    runs = load_runs(dirs, note)
    page = build_html(runs, skipped)
    write_text(Path(out), page)
    return Path(out), runs
