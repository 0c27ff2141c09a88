"""`finsent analyze --entities`: each sentence paired with the watchlist entities it names, each pair scored by an
entity run, per-entity aggregates across documents; the JSON, CSV and HTML reports; the one-line errors of a task
mismatch."""

import csv
import json
import re
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from finsent.apps.cli import main
from finsent.core.errors import FinsentError
from finsent.core.metrics import softmax
from finsent.core.serialization import read_json
from finsent.data.entities import EntityFormat, entity_input
from finsent.data.labels import LABELS
from finsent.data.watchlist import read_watchlist
from finsent.documents import analysis
from finsent.documents.entities import analyze_entities
from finsent.documents.extraction import from_markdown
from finsent.documents.report import ENTITY_CSV_COLUMNS, write_report

NEWS = """# Q3 news

Tesla shares jump as Ford cuts its guidance. Ford
Motor said demand in Europe fell sharply, and Ford expects weaker margins. Analysts expect $TSLA to gain further
next year.

## Outlook

The weather was mild. Tesla plans a new plant in Berlin.
"""
RECALL = "Ford recalls 10,000 cars after a brake fault.\n"
WATCHLIST = "name,aliases,ticker\nTesla,Tesla Inc,TSLA\nFord,Ford Motor|Ford Motor Co,F\nApple,Apple Inc,AAPL\n"
# what the model reads, pair by pair, in reading order (markers style: only the pair's own entity is marked)
INPUTS = [
    ("news.md", "Tesla", "«Tesla» shares jump as Ford cuts its guidance."),
    ("news.md", "Ford", "Tesla shares jump as «Ford» cuts its guidance."),
    ("news.md", "Ford", "«Ford Motor» said demand in Europe fell sharply, and «Ford» expects weaker margins."),
    ("news.md", "Tesla", "Analysts expect «$TSLA» to gain further next year."),
    ("news.md", "Tesla", "«Tesla» plans a new plant in Berlin."),
    ("recall.md", "Ford", "«Ford» recalls 10,000 cars after a brake fault."),
]


class HashPredictor:
    """A stand-in entity run for the fast tests: fixed pseudo-random probabilities per model input, inputs recorded."""

    labels = LABELS
    info = SimpleNamespace(version="e0", task="entity", entity_input={"style": "markers"})

    def __init__(self):
        self.inputs: list[str] = []

    def score(self, texts):
        from finsent.inference.predictor import Scores

        self.inputs += texts
        logits = np.array([np.random.default_rng(zlib.crc32(t.encode())).normal(0, 2, len(LABELS)) for t in texts])
        return Scores(softmax(logits), np.zeros(len(texts), bool), LABELS)


@pytest.fixture
def watchlist_csv(tmp_path):
    path = tmp_path / "watchlist.csv"
    path.write_text(WATCHLIST, encoding="utf-8")
    return path


@pytest.fixture
def docs(tmp_path):
    (tmp_path / "news.md").write_text(NEWS, encoding="utf-8")
    (tmp_path / "recall.md").write_text(RECALL, encoding="utf-8")
    return [tmp_path / "news.md", tmp_path / "recall.md"]


def pair_rows(report: dict) -> list[dict]:
    return [{**p, "source": d["source"]} for d in report["documents"] for p in d["pairs"]]


def polar(row: dict) -> float:
    return row["probabilities"]["positive"] - row["probabilities"]["negative"]


def check_entity(e: dict, mine: list[dict]) -> None:
    """One entity aggregate against its per-pair rows."""
    assert e["mentions"] == len(mine) > 0, e["entity"]
    assert e["score"] == pytest.approx(np.mean([polar(r) for r in mine]), abs=1e-5)
    assert e["label"] == analysis.score_label(e["score"])
    assert e["counts"] == {k: sum(r["label"] == k for r in mine) for k in LABELS}
    for r in mine:
        assert r["score"] == pytest.approx(polar(r), abs=1e-5)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)


def check_aggregates(report: dict) -> None:
    """Every entity aggregate (across documents and per document) recomputed from the per-pair rows."""
    rows = pair_rows(report)
    assert [e["entity"] for e in report["entities"]] == ["Ford", "Tesla"]  # 3 mentions each, then by name
    assert report["not_mentioned"] == ["Apple"] and report["watchlist"] == 3
    assert sum(e["mentions"] for e in report["entities"]) == len(rows)
    for e in report["entities"]:
        mine = [r for r in rows if r["entity"] == e["entity"]]
        check_entity(e, mine)
        assert e["documents"] == len({r["source"] for r in mine})
        strongest = sorted(mine, key=lambda r: -abs(r["score"]))[:3]
        assert [(x["source"], x["start"]) for x in e["evidence"]] == [(x["source"], x["start"]) for x in strongest]
    for d in report["documents"]:
        named = [p["entity"] for p in d["pairs"]]
        assert [e["entity"] for e in d["entities"]] == sorted(set(named), key=lambda n: (-named.count(n), n))
        for e in d["entities"]:
            check_entity(e, [p for p in d["pairs"] if p["entity"] == e["entity"]])


def check_pairs(report: dict, docs) -> None:
    """The pairs in reading order, their sentences and mentions at their places in the document text."""
    rows = pair_rows(report)
    names = {str(p): p.name for p in docs}
    assert [(names[r["source"]], r["entity"]) for r in rows] == [(src, entity) for src, entity, _ in INPUTS]
    news = report["documents"][0]
    for r in rows:
        doc = next(d for d in report["documents"] if d["source"] == r["source"])
        assert doc["text"][r["start"] : r["end"]] == r["text"]
        assert doc["sections"][r["section"]]["start"] <= r["start"] < r["end"] <= doc["sections"][r["section"]]["end"]
        for s, e in r["spans"]:
            assert r["start"] <= s < e <= r["end"]
    ford = rows[2]
    assert ford["mention"] == "Ford Motor" and [news["text"][s:e] for s, e in ford["spans"]] == ["Ford\nMotor", "Ford"]
    assert rows[3]["mention"] == "$TSLA" and news["text"][slice(*rows[3]["spans"][0])] == "$TSLA"
    assert [s["title"] for s in news["sections"]] == ["Q3 news", "Outlook"] and rows[4]["section"] == 1
    assert len(news["sentences"]) == 5  # the sentence without an entity is in the document, not among the pairs


def test_pairs_inputs_and_aggregates(watchlist_csv, docs):
    predictor = HashPredictor()
    prepared = analysis.prepare(from_markdown(str(p), p.read_text(encoding="utf-8")) for p in docs)
    report = analyze_entities(predictor, prepared, read_watchlist(watchlist_csv))
    assert predictor.inputs == [text for _, _, text in INPUTS]  # data.entities.entity_input, as every scoring path
    assert report["task"] == "entity" and report["model_version"] == "e0"
    check_pairs(report, docs)
    check_aggregates(report)
    with pytest.raises(FinsentError, match="entity-level run: give a watchlist"):  # POST /analyze: a 422
        analysis.analyze(predictor, prepared)
    with pytest.raises(FinsentError, match="sentence-level run"):
        analyze_entities(SimpleNamespace(info=SimpleNamespace(version="s0", task="sentence")), prepared, None)


def test_entity_report_csv_and_html(watchlist_csv, docs, tmp_path):
    prepared = analysis.prepare(from_markdown(str(p), p.read_text(encoding="utf-8")) for p in docs)
    report = analyze_entities(HashPredictor(), prepared, read_watchlist(watchlist_csv))
    write_report(report, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ENTITY_CSV_COLUMNS
        rows = list(reader)
    entities = [r for r in rows if r["kind"] == "entity"]
    pairs = [r for r in rows if r["kind"] == "pair"]
    assert len(entities) + len(pairs) == len(rows) and len(pairs) == len(INPUTS)
    for e, row in zip(report["entities"], entities):
        assert (row["entity"], row["label"], int(row["mentions"]), int(row["documents"])) == (
            e["entity"],
            e["label"],
            e["mentions"],
            e["documents"],
        )
        assert [int(row[f"count_{k}"]) for k in LABELS] == [e["counts"][k] for k in LABELS]
        mine = [p for p in pairs if p["entity"] == e["entity"] and p["evidence_rank"]]
        ranked = sorted((int(p["evidence_rank"]), p["text"]) for p in mine)
        assert ranked == [(k, ev["text"]) for k, ev in enumerate(e["evidence"], start=1)]
    assert pairs[2]["text"] == "Ford\nMotor said demand in Europe fell sharply, and Ford expects weaker margins."
    titles = [d["sections"][p["section"]]["title"] for d in report["documents"] for p in d["pairs"]]
    assert [p["section"] for p in pairs] == titles and titles[:5] == ["Q3 news"] * 4 + ["Outlook"]

    write_report(report, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    table = page.split('<table class="entities">')[1].split("</table>")[0]
    assert re.findall(r'<tr data-entity="([^"]+)" data-label="([^"]+)"', table) == [
        (e["entity"], e["label"]) for e in report["entities"]
    ]
    texts = re.findall(r'<div class="text">(.*?)</div>', page, re.S)
    marks = [re.findall(r'<mark class="m (\w+)">(.*?)</mark>', t, re.S) for t in texts]
    expected = [[(p["label"], d["text"][s:e]) for p in d["pairs"] for s, e in p["spans"]] for d in report["documents"]]
    assert [sorted(m) for m in marks] == [sorted(x) for x in expected]
    assert "Not named: Apple." in page


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("finsent: error: ") and "Traceback" not in err, err
    return err


def test_task_mismatch_and_bad_watchlist_fail_with_one_line(watchlist_csv, docs, tmp_path, capsys):
    """Checked before any model loads: the runs here are run folders with only finsent_model.json."""
    entity_run, sentence_run = tmp_path / "entity-run", tmp_path / "sentence-run"
    entity_run.mkdir()
    sentence_run.mkdir()
    (entity_run / "finsent_model.json").write_text(json.dumps({"version": "e0", "task": "entity"}))
    (sentence_run / "finsent_model.json").write_text(json.dumps({"version": "s0"}))
    doc, wl = str(docs[0]), str(watchlist_csv)
    err = one_line_error(capsys, ["analyze", doc, "--model_dir", str(entity_run)])
    assert "an entity-level run" in err and "--entities" in err
    err = one_line_error(capsys, ["analyze", doc, "--model_dir", str(sentence_run), "--entities", wl])
    assert "a sentence-level run" in err and "entity-level run" in err
    ask = ["analyze", doc, "--model_dir", str(entity_run), "--entities", wl, "--ask", "q"]
    assert "--ask" in one_line_error(capsys, ask)
    index = ["analyze", "--index", str(tmp_path), "--ask", "q", "--model_dir", str(entity_run), "--entities", wl]
    assert "--entities" in one_line_error(capsys, index)
    no_name = tmp_path / "tickers.csv"
    no_name.write_text("ticker\nTSLA\n")
    argv = ["analyze", doc, "--model_dir", str(entity_run), "--entities"]
    assert "name" in one_line_error(capsys, [*argv, str(no_name)])
    assert "no such file" in one_line_error(capsys, [*argv, str(tmp_path / "missing.csv")])
    err = one_line_error(capsys, ["analyze", doc, "--model_dir", str(entity_run), "--entities", wl, "--output", wl])
    assert "is the watchlist" in err


# ---- with the real tiny entity run (slow) ------------------------------------------------------------------------


def test_real_entity_run_scores_pairs_and_aggregates(entity_run, watchlist_csv, docs, tmp_path, capsys):
    from finsent.inference.predictor import Predictor

    out = tmp_path / "report.json"
    argv = ["analyze", *map(str, docs), "--model_dir", str(entity_run), "--entities", str(watchlist_csv)]
    assert main([*argv, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Ford: " in printed and "Tesla: " in printed and f"report: {out}" in printed
    report = read_json(out)
    assert report["task"] == "entity" and report["model_version"] == "e1"
    check_pairs(report, docs)
    check_aggregates(report)
    predictor = Predictor(entity_run)
    fmt = EntityFormat.from_json(predictor.info.entity_input)
    rows = pair_rows(report)
    # the model read entity_input(sentence, entity, fmt, spans) for each pair: the same probabilities scored here
    sentences = [" ".join(r["text"].split()) for r in rows]
    found = [read_watchlist(watchlist_csv).find(t) for t in sentences]
    spans = [[(m.start, m.end) for m in ms if m.entity == r["entity"]] for ms, r in zip(found, rows)]
    expected = predictor.score([entity_input(t, r["entity"], fmt, s) for t, r, s in zip(sentences, rows, spans)]).probs
    got = np.array([[r["probabilities"][k] for k in predictor.labels] for r in rows])
    assert got == pytest.approx(expected, abs=1e-5)

    err = one_line_error(capsys, ["analyze", str(docs[0]), "--model_dir", str(entity_run)])
    assert str(entity_run) in err and "entity-level run" in err
