"""The dashboard's plotly figures, one function per chart."""

from __future__ import annotations

import html
import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from markupsafe import Markup

from finsent.data.labels import LABELS
from finsent.runs.folder import Run

ERROR_COLORS = {
    "Correct": "#43a047",
    "Low Confidence": "#fbc02d",
    "Misclassification": "#fb8c00",
    "High-Confidence Error": "#d32f2f",
}
ERROR_ORDER = {"High-Confidence Error": 0, "Misclassification": 1, "Low Confidence": 2, "Correct": 3}
RUN_COLORS = ("#1e88e5", "#8e24aa", "#00897b", "#f4511e", "#6d4c41", "#3949ab")
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


def confusion_figure(confusion: list[list[int]], title: str = "Confusion matrix") -> go.Figure:
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
        f"{title} (rows: true, columns: predicted)",
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


def plot_div(fig: go.Figure, div_id: str) -> Markup:
    """A figure's div (plotly.js itself is inlined once per page)."""
    return Markup(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG))


def delta_cell(delta: dict, spec: str) -> dict:
    """One 'delta' table cell: the formatted change and whether it is better (up), worse (down) or neither."""
    if delta["delta"] is None:
        return {"text": "–", "cls": ""}
    cls = "" if delta["improved"] is None else ("up" if delta["improved"] else "down")
    return {"text": format(delta["delta"], spec), "cls": cls}


def fmt(value, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return (
        format(value, spec)
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        else str(value)
    )
