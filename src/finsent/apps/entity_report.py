"""The HTML report of `finsent score --date_column`: each entity's daily sentiment line over its mention counts, one
self-contained offline page (plotly.js inlined once, the daily table embedded as JSON)."""

from __future__ import annotations

import datetime as dt
import json
import math

import pandas as pd
import plotly.graph_objects as go
from markupsafe import Markup

from finsent.apps.dashboard.figures import TEMPLATE, plot_div
from finsent.core.pages import render

MAX_CHARTS = 30  # entities charted, most mentioned first; the summary table lists them all
DAY_MS = 86_400_000


def entity_figure(rows: pd.DataFrame, entity: str, labels) -> go.Figure:
    """Mentions per day (bars, right axis) and the day's mean P(positive) - P(negative) (line, left axis)."""
    from plotly.subplots import make_subplots

    counts = [" · ".join(f"{label} {row[label]}" for label in labels) for _, row in rows.iterrows()]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Bar(
            x=rows["date"].tolist(),
            y=rows["mentions"].tolist(),
            name="mentions",
            marker_color="#b0bec5",
            opacity=0.5,
            width=[DAY_MS * 0.6] * len(rows),
            hovertext=counts,
            hovertemplate="%{x}: %{y} mentions<br>%{hovertext}<extra></extra>",
        ),
        secondary_y=True,
    )
    fig.add_trace(
        go.Scatter(
            x=rows["date"].tolist(),
            y=rows["mean_score"].tolist(),
            name="mean score",
            mode="lines+markers",
            line={"color": "#1e88e5", "width": 2},
            hovertemplate="%{x}: mean score %{y:+.3f}<extra></extra>",
        ),
        secondary_y=False,
    )
    fig.update_yaxes(title_text="mean P(pos) − P(neg)", range=[-1.05, 1.05], zeroline=True, secondary_y=False)
    most = int(rows["mentions"].max())
    fig.update_yaxes(
        title_text="mentions",
        range=[0, most * 1.15],
        dtick=max(1, math.ceil(most / 5)),
        showgrid=False,
        secondary_y=True,
    )
    days = pd.to_datetime(rows["date"])
    span = (days.max() - days.min()).days
    fig.update_xaxes(
        type="date",
        tickformat="%Y-%m-%d",
        dtick=DAY_MS * max(1, math.ceil(span / 10)),
        range=[(days.min() - pd.Timedelta(hours=12)).isoformat(), (days.max() + pd.Timedelta(hours=12)).isoformat()],
    )
    fig.update_layout(template=TEMPLATE, title=entity, height=320, bargap=0.3)
    return fig


def summary_rows(table: pd.DataFrame, labels) -> list[dict]:
    """One row per entity, most mentioned first: days, mentions, mention-weighted mean score, label counts."""
    out = []
    for entity, rows in table.groupby("entity", sort=False):
        mentions = int(rows["mentions"].sum())
        score = float((rows["mean_score"] * rows["mentions"]).sum() / mentions) if mentions else 0.0
        counts = {label: int(rows[label].sum()) for label in labels}
        out.append({"entity": entity, "days": len(rows), "mentions": mentions, "score": score, "counts": counts})
    return sorted(out, key=lambda r: (-r["mentions"], str(r["entity"])))


def report_html(table: pd.DataFrame, labels, title: str) -> str:
    """The whole page as one string."""
    from plotly.offline import get_plotlyjs

    entities = summary_rows(table, labels)
    charts = []
    for i, row in enumerate(entities[:MAX_CHARTS]):
        rows = table[table["entity"] == row["entity"]].sort_values("date")
        charts.append({"entity": row["entity"], "div": plot_div(entity_figure(rows, row["entity"], labels), f"e{i}")})
    data = json.dumps(table.to_dict(orient="records"), ensure_ascii=False).replace("</", "<\\/")
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return render(
        "entity_daily.html.j2",
        title=title,
        meta=f"generated {generated}; {len(entities)} entities, {int(table['mentions'].sum()) if len(table) else 0} mentions",
        plotly_js=Markup(get_plotlyjs()),
        labels=list(labels),
        entities=entities,
        charts=charts,
        hidden=max(0, len(entities) - MAX_CHARTS),
        data=Markup(data),
    )
