"""Write a `finsent analyze` report as JSON, CSV (one row per sentence) or a self-contained offline HTML page."""

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


def write_report(report: dict, path: str | Path, raw_csv: bool = False) -> None:
    """Write the report in the format its file name asks for (atomic).

    In a CSV, a string cell that a spreadsheet would run as a formula gets a leading ' (neutralise_cell), unless raw_csv."""
    fmt = output_format(path)
    try:
        if fmt == ".json":
            write_json(Path(path), report)
        elif fmt == ".csv":
            write_csv(Path(path), csv_rows(report), CSV_COLUMNS, neutralise=not raw_csv)
        else:
            write_text(Path(path), render_html(report))
    except OSError as e:
        raise FinsentError(
            f"--output {path}: cannot write ({e.strerror}); check the folder exists and is writable"
        ) from None
