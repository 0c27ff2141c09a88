"""The Production view: `finsent monitor` reports drawn over their windows (estimated accuracy with its interval,
true accuracy where labels came, drift, novelty, label shares), as the dashboard's Production tab and as the
standalone page `finsent monitor --output report.html` writes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import plotly.graph_objects as go
from markupsafe import Markup

from finsent.apps.dashboard.figures import _layout, fmt, plot_div
from finsent.core.errors import FinsentError
from finsent.core.pages import render
from finsent.core.serialization import read_json

DRIFT_COLOR = "#c0392b"
ESTIMATE_COLOR = "#2c7fb8"
TRUTH_COLOR = "#1a9850"
LABEL_COLORS = {"negative": "#d73027", "neutral": "#999999", "positive": "#1a9850"}


def read_report(path: str | Path) -> dict:
    """A monitor report.json, checked for what the view draws."""
    path = Path(path)
    try:
        report = read_json(path)
    except FileNotFoundError:
        raise FinsentError(f"{path}: no such monitor report (--monitor)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise FinsentError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(report, dict) or "finsent_monitor" not in report or not isinstance(report.get("windows"), list):
        raise FinsentError(f"{path}: not a finsent monitor report; write one with finsent monitor --output report.json")
    report.setdefault("source", str(path))
    return report


def _x(report: dict) -> tuple[list, str]:
    windows = report["windows"]
    if report["window"]["kind"] == "time":
        return [w["start"] for w in windows], "window start (UTC)"
    return [w["end"] for w in windows], "rows seen"


def accuracy_figure(report: dict) -> go.Figure:
    """Estimated accuracy per window with its interval, ATC's estimate, true accuracy where known, drift marked."""
    windows, ref = report["windows"], report["reference"]
    x, title = _x(report)
    lo = [w["estimated_accuracy_ci"][0] for w in windows]
    hi = [w["estimated_accuracy_ci"][1] for w in windows]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x + x[::-1],
            y=hi + lo[::-1],
            fill="toself",
            fillcolor="rgba(44,127,184,0.15)",
            line={"width": 0},
            name="estimate's interval",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[w["estimated_accuracy"] for w in windows],
            mode="lines+markers",
            name="estimated accuracy (CBPE)",
            line={"color": ESTIMATE_COLOR},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[w.get("estimated_accuracy_atc") for w in windows],
            mode="lines",
            name="estimated accuracy (ATC)",
            line={"color": ESTIMATE_COLOR, "dash": "dot"},
        )
    )
    if any(w["accuracy"] is not None for w in windows):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[w["accuracy"] for w in windows],
                mode="lines+markers",
                name="true accuracy",
                line={"color": TRUTH_COLOR},
            )
        )
    drift = [(xi, w["estimated_accuracy"]) for xi, w in zip(x, windows) if w["drift"]]
    if drift:
        fig.add_trace(
            go.Scatter(
                x=[d[0] for d in drift],
                y=[d[1] for d in drift],
                mode="markers",
                name="drift",
                marker={"color": DRIFT_COLOR, "symbol": "x", "size": 11},
            )
        )
    if ref.get("test_accuracy") is not None:
        fig.add_hline(
            y=ref["test_accuracy"],
            line_dash="dash",
            line_color="#555",
            annotation_text=f"test accuracy {ref['test_accuracy']:.3f}",
        )
    return _layout(fig, "Accuracy per window, estimated without labels", xaxis_title=title, yaxis_title="accuracy")


def shift_figure(report: dict) -> go.Figure:
    """Predicted-label shares and novelty share per window."""
    windows = report["windows"]
    x, title = _x(report)
    fig = go.Figure()
    for label in report["reference"]["label_shares"]:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[w["label_shares"].get(label) for w in windows],
                mode="lines",
                name=f"share {label}",
                line={"color": LABEL_COLORS.get(label)},
            )
        )
    if any(w.get("novelty_share") is not None for w in windows):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[w.get("novelty_share") for w in windows],
                mode="lines+markers",
                name="novelty share",
                line={"color": "#6a3d9a", "dash": "dash"},
            )
        )
    return _layout(fig, "Predicted labels and novelty per window", xaxis_title=title, yaxis_title="share")


def _row(w: dict) -> dict:
    ci = w["estimated_accuracy_ci"]
    return {
        "index": w["index"],
        "span": f"{w['start']} – {w['end']}",
        "n": w["n"],
        "estimate": f"{fmt(w['estimated_accuracy'], '.3f')} [{fmt(ci[0], '.3f')}, {fmt(ci[1], '.3f')}]",
        "atc": fmt(w.get("estimated_accuracy_atc"), ".3f"),
        "accuracy": fmt(w["accuracy"], ".3f"),
        "novelty": fmt(w.get("novelty_share"), ".3f"),
        "drift": ", ".join(w.get("drifting_tests", [])),
        "terms": ", ".join(t["term"] for t in w.get("top_terms", [])[:6]),
        "examples": [e["text"] for e in w.get("examples", [])[:3]],
    }


def production_view(reports: list[dict]) -> list[dict]:
    """One block per report: its heading, two charts and the windows table."""
    blocks = []
    for i, report in enumerate(reports):
        ref, summary = report["reference"], report["summary"]
        blocks.append(
            {
                "title": f"{ref['model_version']} on {', '.join(report.get('inputs', {})) or report['source']}",
                "summary": (
                    f"{summary['rows']:,} rows in {summary['windows']} windows of {report['window']['size']} "
                    f"{'rows' if report['window']['kind'] == 'rows' else ''}; {summary['drifting_windows']} drifting; "
                    f"test accuracy {fmt(ref.get('test_accuracy'), '.3f')}, reference estimate "
                    f"{fmt(ref.get('estimated_test_accuracy'), '.3f')}; {ref.get('novelty_note') or 'novelty on'}"
                ),
                "charts": [
                    plot_div(accuracy_figure(report), f"production-accuracy-{i}"),
                    plot_div(shift_figure(report), f"production-shift-{i}"),
                ],
                "rows": [_row(w) for w in report["windows"]],
            }
        )
    return blocks


def monitor_page(report: dict) -> str:
    """The standalone HTML of one monitor report (plotly.js inlined, offline)."""
    from plotly.offline import get_plotlyjs

    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return render(
        "monitor.html.j2",
        title=f"finsent monitor: {report['reference']['model_version']}",
        meta=f"generated {generated}",
        plotly_js=Markup(get_plotlyjs()),
        blocks=production_view([report]),
    )
