"""Write a `finsent analyze` report as JSON, CSV (one row per sentence; per entity and pair for an entity run) or a
self-contained offline HTML page."""

from __future__ import annotations

from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.pages import render
from finsent.core.serialization import write_csv, write_json, write_text
from finsent.data.labels import LABELS

FORMATS = (".json", ".html", ".csv")
CSV_COLUMNS = [
    "source",
    "section",
    "start",
    "end",
    "text",
    "label",
    "confidence",
    *[f"prob_{label}" for label in LABELS],
    "question",
    "rank",
    "similarity",
]
EXTREMES = 5  # most negative and most positive sentences shown in the HTML report
SVG_WIDTH, SVG_HEIGHT = 900, 180


def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise FinsentError(f"--output {path}: expected a .json, .html or .csv file name")
    return suffix


def csv_rows(report: dict) -> list[dict]:
    """Each document sentence, then each evidence sentence with its question, rank and similarity."""
    rows = []
    for doc in report["documents"]:
        titles = [s["title"] for s in doc["sections"]]
        for s in doc["sentences"]:
            probs = {f"prob_{k}": v for k, v in s["probabilities"].items()}
            rows.append({**s, **probs, "source": doc["source"], "section": titles[s["section"]]})
        for ev in doc["evidence"]:
            for rank, s in enumerate(ev["sentences"], start=1):
                rows.append({"source": doc["source"], "question": ev["question"], "rank": rank, **s})
    for ev in report.get("evidence", []):
        for rank, s in enumerate(ev["sentences"], start=1):
            rows.append({"question": ev["question"], "rank": rank, **s})
    return [{k: row.get(k, "") for k in CSV_COLUMNS} for row in rows]


def trajectory(doc: dict, width: int = SVG_WIDTH, height: int = SVG_HEIGHT) -> dict:
    """SVG geometry of the sentiment through a document: one bar per sentence, a moving average, section marks."""
    sents = doc["sentences"]
    n = len(sents)
    polar = [s["probabilities"].get("positive", 0) - s["probabilities"].get("negative", 0) for s in sents]
    window = max(1, min(25, n // 20 or 1))
    smooth = [sum(polar[max(0, i - window + 1) : i + 1]) / len(polar[max(0, i - window + 1) : i + 1]) for i in range(n)]
    step = width / n
    mid = height / 2

    def y(v: float) -> float:
        return round(mid - v * (mid - 6), 2)

    bars = [
        {"x": round(i * step, 2), "y": min(y(v), mid), "h": round(abs(y(v) - mid), 2), "label": s["label"], "i": i}
        for i, (v, s) in enumerate(zip(polar, sents))
    ]
    line = " ".join(f"{round((i + 0.5) * step, 2)},{y(v)}" for i, v in enumerate(smooth))
    marks, seen = [], set()
    for i, s in enumerate(sents):
        if s["section"] not in seen:
            seen.add(s["section"])
            marks.append({"x": round(i * step, 2), "title": doc["sections"][s["section"]]["title"]})
    return {
        "width": width,
        "height": height,
        "mid": mid,
        "bar": max(step - 0.5, 0.5),
        "bars": bars,
        "line": line,
        "window": window,
        "marks": marks,
    }


def pieces(doc: dict) -> list[dict]:
    """The document text cut at sentence and section boundaries: {text, sentence index or None, section anchor}."""
    text, out, pos = doc["text"], [], 0
    starts = {sec["start"]: i for i, sec in enumerate(doc["sections"])}
    bounds = sorted(
        [(s["start"], s["end"], i) for i, s in enumerate(doc["sentences"])] + [(start, start, None) for start in starts]
    )
    for start, end, i in bounds:
        if start > pos:
            out.append({"text": text[pos:start], "sentence": None, "section": None})
            pos = start
        if i is None:
            out.append({"text": "", "sentence": None, "section": starts[start]})
        else:
            out.append({"text": text[start:end], "sentence": i, "section": None})
            pos = end
    out.append({"text": text[pos:], "sentence": None, "section": None})
    return out


def extremes(doc: dict, k: int = EXTREMES) -> tuple[list[int], list[int]]:
    """Indices of the k most negative and the k most positive sentences by P(positive) - P(negative)."""
    polar = [s["probabilities"].get("positive", 0) - s["probabilities"].get("negative", 0) for s in doc["sentences"]]
    order = sorted(range(len(polar)), key=lambda i: polar[i])
    negative = [i for i in order[:k] if polar[i] < 0]
    positive = [i for i in reversed(order[-k:]) if polar[i] > 0]
    return negative, positive


def render_html(report: dict) -> str:
    """The report as one HTML page on the shared page shell: no script, style or font is loaded from anywhere else."""
    docs = [
        {
            "doc": doc,
            "pieces": pieces(doc),
            "trajectory": trajectory(doc),
            "extremes": extremes(doc),
            "by_start": {s["start"]: i for i, s in enumerate(doc["sentences"])},
        }
        for doc in report["documents"]
    ]
    sources = ", ".join(doc["source"] for doc in report["documents"]) or "questions"
    return render(
        "report.html.j2",
        title=f"finsent analyze: {sources}",
        meta=f"Document sentiment · model {report['model_version']}",
        report=report,
        docs=docs,
        labels=LABELS,
    )


# ---- entity reports (finsent analyze --entities) ---------------------------------------------------------------

ENTITY_CSV_COLUMNS = [
    "kind",
    "entity",
    "source",
    "section",
    "start",
    "end",
    "text",
    "mention",
    "label",
    "confidence",
    *[f"prob_{label}" for label in LABELS],
    "score",
    "mentions",
    "documents",
    *[f"count_{label}" for label in LABELS],
    "evidence_rank",
]


def entity_csv_rows(report: dict) -> list[dict]:
    """One `entity` row per entity (its aggregate across the documents), then one `pair` row per scored (sentence,
    entity) pair; evidence_rank numbers each entity's strongest sentences."""
    rows = []
    rank = {}
    for e in report["entities"]:
        counts = {f"count_{k}": v for k, v in e["counts"].items()}
        rows.append({**e, **counts, "kind": "entity"})
        rank.update({(ev["source"], ev["start"], e["entity"]): k for k, ev in enumerate(e["evidence"], start=1)})
    for doc in report["documents"]:
        titles = [s["title"] for s in doc["sections"]]
        for p in doc["pairs"]:
            probs = {f"prob_{k}": v for k, v in p["probabilities"].items()}
            where = {"source": doc["source"], "section": titles[p["section"]]}
            ranked = rank.get((doc["source"], p["start"], p["entity"]), "")
            rows.append({**p, **probs, **where, "kind": "pair", "evidence_rank": ranked})
    return [{k: row.get(k, "") for k in ENTITY_CSV_COLUMNS} for row in rows]


def marked(text: str, offset: int, spans: list[tuple[int, int, str]]) -> list[dict]:
    """The text cut at mention spans (document offsets; `offset`: where the text starts): {text, label or None}."""
    out, pos = [], 0
    for start, end, label in sorted(spans):
        start, end = start - offset, end - offset
        if start < pos or start < 0 or end > len(text):
            continue
        out += [{"text": text[pos:start], "label": None}, {"text": text[start:end], "label": label}]
        pos = end
    return out + [{"text": text[pos:], "label": None}]


def render_entity_html(report: dict) -> str:
    """An entity report as one offline HTML page: the entities table, each entity's evidence, then the documents
    with every mention coloured by its pair's label."""
    entities = [
        {
            "e": e,
            "evidence": [
                {"ev": ev, "pieces": marked(ev["text"], ev["start"], [(s, t, ev["label"]) for s, t in ev["spans"]])}
                for ev in e["evidence"]
            ],
        }
        for e in report["entities"]
    ]
    docs = [
        {
            "doc": doc,
            "pieces": marked(doc["text"], 0, [(s, t, p["label"]) for p in doc["pairs"] for s, t in p["spans"]]),
        }
        for doc in report["documents"]
    ]
    sources = ", ".join(doc["source"] for doc in report["documents"])
    return render(
        "entity_report.html.j2",
        title=f"finsent analyze: {sources}",
        meta=f"Entity sentiment · model {report['model_version']} · watchlist of {report['watchlist']} entities",
        report=report,
        entities=entities,
        docs=docs,
        labels=LABELS,
    )


def write_report(report: dict, path: str | Path, raw_csv: bool = False) -> None:
    """Write the report in the format its file name asks for (atomic).

    In a CSV, a string cell that a spreadsheet would run as a formula gets a leading ' (neutralise_cell), unless raw_csv."""
    fmt = output_format(path)
    entity = report.get("task") == "entity"
    try:
        if fmt == ".json":
            write_json(Path(path), report)
        elif fmt == ".csv":
            rows, columns = (entity_csv_rows, ENTITY_CSV_COLUMNS) if entity else (csv_rows, CSV_COLUMNS)
            write_csv(Path(path), rows(report), columns, neutralise=not raw_csv)
        else:
            write_text(Path(path), (render_entity_html if entity else render_html)(report))
    except OSError as e:
        raise FinsentError(
            f"--output {path}: cannot write ({e.strerror}); check the folder exists and is writable"
        ) from None
