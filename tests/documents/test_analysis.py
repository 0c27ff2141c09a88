"""Document extraction, sections, sentence segmentation with offsets, aggregates and bad input (no model: fast)."""

import csv
import html
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from documentfactory import PRESS_RELEASE, held_out_sentences, make_pdf, sectioned_markdown
from finsent.apps.cli import main
from finsent.core.serialization import read_json
from finsent.data.corpus import load_data
from finsent.data.labels import LABELS
from finsent.documents import analysis, extraction
from finsent.documents.extraction import from_html, from_markdown, read_document
from finsent.documents.segmentation import sentence_spans, sentences


def texts_of(doc) -> list[str]:
    return [doc.text[s.start : s.end] for s in sentences(doc)]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Operating profit rose to EUR 13.1 mn. from EUR 8.7 mn. in Q3 2007. Sales fell.",
            ["Operating profit rose to EUR 13.1 mn. from EUR 8.7 mn. in Q3 2007.", "Sales fell."],
        ),
        (
            "Nokia Inc. reported net sales of approx. EUR 2.5 bn. The company expects growth of 3.5% in Q3.",
            ["Nokia Inc. reported net sales of approx. EUR 2.5 bn.", "The company expects growth of 3.5% in Q3."],
        ),
        (
            "Sales were EUR 12.0 mn. Operating profit fell. The deal with Acme Inc. closed in Q3.",
            ["Sales were EUR 12.0 mn.", "Operating profit fell.", "The deal with Acme Inc. closed in Q3."],
        ),
        (
            "The deal was signed with Acme Inc. The price was not disclosed.",
            ["The deal was signed with Acme Inc.", "The price was not disclosed."],
        ),
        (  # PhraseBank's tokenised style: a space before the final period
            "Profit rose by 3.5 % . Net sales totalled EUR 1.2 bn , up 0.5 % .",
            ["Profit rose by 3.5 % .", "Net sales totalled EUR 1.2 bn , up 0.5 % ."],
        ),
        (
            "Highlights:\n- Net sales up 12.1%\n- EBIT margin 8.1 % (7.0 %)\n* Cash flow improved. Debt fell.\n\nThe outlook is unchanged.",
            [
                "Highlights:",
                "Net sales up 12.1%",
                "EBIT margin 8.1 % (7.0 %)",
                "Cash flow improved.",
                "Debt fell.",
                "The outlook is unchanged.",
            ],
        ),
        (
            "| Item | Q3 2024 | Q3 2023 |\n|---|---|---|\n| Sales | 13.1 | 12.0 |\nItem\t2024\t2023\n\nRevenue grew.",
            ["| Item | Q3 2024 | Q3 2023 |", "| Sales | 13.1 | 12.0 |", "Item\t2024\t2023", "Revenue grew."],
        ),
        (
            "Net sales rose by 5 % in the\nthird quarter. Operating profit\nfell to EUR 2 mn.\n12.5\n",
            ["Net sales rose by 5 % in the\nthird quarter.", "Operating profit\nfell to EUR 2 mn."],
        ),
    ],
)
def test_finance_sentence_segmentation(text, expected):
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == expected


def test_phrasebank_sentences_come_back_from_running_text(phrasebank_zip):
    """Well-formed AllAgree sentences joined into one paragraph are split back at their own boundaries."""
    texts = [t for t in load_data(phrasebank_zip, "all").texts if t[0].isupper() and t.endswith(".")]
    text = " ".join(texts)
    got = {text[s:e] for s, e in sentence_spans(text)}
    recovered = sum(t in got for t in texts)
    assert recovered / len(texts) >= 0.99, f"{len(texts) - recovered} of {len(texts)} sentences split wrongly"


def test_markdown_sections_offsets_and_headings():
    doc = from_markdown("release.md", PRESS_RELEASE)
    titles = [s.title for s in doc.sections]
    assert titles == ["", "Acme Oyj interim report January-September 2024", "Highlights", "Outlook", "Risks"]
    sents = sentences(doc)
    for s in sents:
        sec = doc.sections[s.section]
        assert sec.start <= s.start < s.end <= sec.end
        assert not doc.text[s.start : s.end].startswith("#")
    by_section = {}
    for s in sents:
        by_section.setdefault(doc.sections[s.section].title, []).append(doc.text[s.start : s.end])
    assert by_section["Outlook"] == [
        "Acme expects its net sales for 2025 to grow by 5-10 % from 2024.",
        "The company expects operating profit to improve next year.",
    ]
    assert "Earnings per share were EUR 0.25 (0.18)." in by_section["Highlights"]  # the bullet marker is not in it
    assert "| Net sales | 13.1 | 12.0 |" in by_section["Highlights"]  # a table row is one unit
    assert not any(set(t) <= set("|-: ") for t in by_section["Highlights"])  # the rule row is dropped
    assert len(by_section["Risks"]) == 3


def test_markdown_heading_in_code_fence_is_text():
    doc = from_markdown("x.md", "# A\nSales rose.\n```\n# not a heading\n```\nProfit fell.\n")
    assert [s.title for s in doc.sections] == ["", "A"]


def test_html_text_sections_and_offsets():
    html = """<!doctype html><html><head><title>ignored</title><style>p { color: red }</style></head><body>
    <nav>Home</nav><h1>Results</h1><p>Net sales rose 5 %. Operating <b>profit</b> fell.</p>
    <ul><li>Orders up 12 %</li><li>Cash flow EUR 3.4 mn</li></ul><script>alert("x")</script>
    <h2>Tables &amp; figures</h2><table><tr><th>EUR mn</th><th>2024</th></tr><tr><td>Sales</td><td>13.1</td></tr></table>
    <h4>Minor heading</h4><p>The outlook<br>is unchanged.</p><!-- comment --></body></html>"""
    doc = from_html("x.html", html)
    assert (
        "alert" not in doc.text and "color" not in doc.text and "ignored" not in doc.text and "comment" not in doc.text
    )
    assert [s.title for s in doc.sections] == ["", "Results", "Tables & figures"]
    got = [(doc.sections[s.section].title, doc.text[s.start : s.end]) for s in sentences(doc)]
    assert got == [
        ("", "Home"),
        ("Results", "Net sales rose 5 %."),
        ("Results", "Operating profit fell."),
        ("Results", "Orders up 12 %"),
        ("Results", "Cash flow EUR 3.4 mn"),
        ("Tables & figures", "| EUR mn | 2024 |"),
        ("Tables & figures", "| Sales | 13.1 |"),
        ("Tables & figures", "Minor heading"),
        ("Tables & figures", "The outlook\nis unchanged."),
    ]


def test_pdf_outline_sections_and_pages(tmp_path):
    pages = [
        ["Results", "Net sales rose by 12 % to EUR 13.1 mn.", "Operating profit", "fell to EUR 1.2 mn."],
        ["Outlook", "The company expects growth (c) Acme."],
    ]
    doc = read_document(make_pdf(tmp_path / "outline.pdf", pages, outline=[("Results", 0), ("Outlook", 1)]))
    got = [(doc.sections[s.section].title, doc.text[s.start : s.end]) for s in sentences(doc)]
    assert got == [
        ("Results", "Net sales rose by 12 % to EUR 13.1 mn."),
        ("Results", "Operating profit\nfell to EUR 1.2 mn."),
        ("Outlook", "The company expects growth (c) Acme."),
    ]
    doc = read_document(make_pdf(tmp_path / "pages.pdf", pages))
    assert [s.title for s in doc.sections] == ["page 1", "page 2"]
    assert texts_of(doc)[0] == "Results\nNet sales rose by 12 % to EUR 13.1 mn."


def test_aggregates_score_label_and_counts():
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.05, 0.9, 0.05]])
    agg = analysis.aggregate(probs, LABELS)
    assert agg["score"] == pytest.approx(np.mean([0.6, -0.5, 0.0]), abs=1e-6)
    assert agg["counts"] == {"negative": 1, "neutral": 1, "positive": 1}
    assert agg["label"] == "neutral"  # 0.033 is inside the band
    band = analysis.NEUTRAL_BAND
    assert [analysis.score_label(v) for v in (band, band - 1e-9, -band, -band + 1e-9)] == [
        "positive",
        "neutral",
        "negative",
        "neutral",
    ]


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("finsent: error: ") and "Traceback" not in err, err
    return err


def test_bad_documents_fail_with_one_line(tmp_path, capsys):
    run = str(tmp_path / "no-run")  # the documents are checked before any model is loaded
    (tmp_path / "report.docx").write_bytes(b"PK\x03\x04")
    (tmp_path / "empty.txt").write_text("  \n\n")
    (tmp_path / "rules.md").write_text("# Title\n\n---\n| 1 | 2 |\n")
    (tmp_path / "latin1.txt").write_bytes("Net sales rose \xe9.".encode("latin-1"))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a PDF")
    make_pdf(tmp_path / "locked.pdf", [["Secret figures."]], password="pw")
    make_pdf(tmp_path / "blank.pdf", [[]])
    (tmp_path / "nodocs").mkdir()
    (tmp_path / "nodocs" / "data.csv").write_text("a,b\n")
    cases = {
        "report.docx": "unsupported file type '.docx'",
        "empty.txt": "no sentences found",
        "rules.md": "no sentences found",
        "latin1.txt": "not UTF-8",
        "broken.pdf": "not a readable PDF",
        "locked.pdf": "encrypted",
        "blank.pdf": "no sentences found",
        "nodocs": "no .txt, .md, .html or .pdf files",
        "missing.md": "no such file",
    }
    for name, message in cases.items():
        err = one_line_error(capsys, ["analyze", str(tmp_path / name), "--model_dir", run])
        assert message in err and name in err, err
    assert "--output" in one_line_error(
        capsys, ["analyze", str(tmp_path / "empty.txt"), "--model_dir", run, "--output", "r.xlsx"]
    )
    assert "nothing to analyze" in one_line_error(capsys, ["analyze", "--model_dir", run])
    page = str(tmp_path / "page.html")
    assert "is an input document" in one_line_error(capsys, ["analyze", page, "--model_dir", run, "--output", page])
    assert "--top_k 0" in one_line_error(capsys, ["analyze", page, "--model_dir", run, "--ask", "q", "--top_k", "0"])
    assert "question is empty" in one_line_error(capsys, ["analyze", page, "--model_dir", run, "--ask", " "])


def test_missing_documents_extra_is_named_in_one_line(monkeypatch, tmp_path):
    from finsent.core.errors import FinsentError
    from finsent.documents.retrieval import CorpusIndex

    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "index.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(FinsentError, match=r"needs pypdf: pip install 'finsent\[documents\]'"):
        read_document(tmp_path / "a.pdf")
    with pytest.raises(FinsentError, match=r"needs faiss-cpu: pip install 'finsent\[documents\]'"):
        CorpusIndex.load(tmp_path)


def test_folder_input_reads_supported_files_sorted(tmp_path):
    (tmp_path / "b.md").write_text("# B\nSales rose.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("Profit fell.\n")
    (tmp_path / "notes.csv").write_text("x\n")
    paths = extraction.input_paths([str(tmp_path)])
    assert paths == [str(tmp_path / "b.md"), str(tmp_path / "sub" / "a.txt")]


# ---- with the real packaged MiniLM and a short real training run (slow) ------------------------------------------


@pytest.fixture(scope="module")
def predictor(lora_run):
    from finsent.inference.predictor import Predictor

    return Predictor(lora_run)


@pytest.fixture(scope="module")
def news_md(phrasebank_zip, tmp_path_factory):
    """A Markdown document of held-out AllAgree sentences: a positive, a negative and a neutral section."""
    text, plan = sectioned_markdown(held_out_sentences(phrasebank_zip, 12))
    path = tmp_path_factory.mktemp("docs") / "news.md"
    path.write_text(text, encoding="utf-8")
    return path, plan


def analyze_json(tmp_path, *argv: str) -> dict:
    out = tmp_path / "report.json"
    assert main(["analyze", *argv, "--output", str(out)]) == 0
    return read_json(out)


@pytest.mark.slow
def test_phrasebank_document_section_labels_and_counts(lora_run, predictor, news_md, tmp_path):
    path, plan = news_md
    report = analyze_json(tmp_path, str(path), "--model_dir", str(lora_run))
    assert report["model_version"] == "v1" and report["neutral_band"] == analysis.NEUTRAL_BAND
    (doc,) = report["documents"]
    assert doc["source"] == str(path) and doc["text"] == path.read_text(encoding="utf-8")
    assert [s["title"] for s in doc["sections"]] == [title for title, _, _ in plan]  # the title-only H1 has no sentence
    every = []
    for i, (sec, (title, label, sents)) in enumerate(zip(doc["sections"], plan)):
        mine = [s for s in doc["sentences"] if s["section"] == i]
        assert [s["text"] for s in mine] == sents  # segmentation gives back exactly the sentences placed
        probs = predictor.score(sents).probs
        every.append(probs)
        assert sec["counts"] == {name: int((probs.argmax(1) == j).sum()) for j, name in enumerate(LABELS)}
        assert sec["score"] == pytest.approx(float(np.mean(probs[:, 2] - probs[:, 0])), abs=1e-5)
        assert sec["label"] == label, (title, sec)
        for s, p in zip(mine, probs):
            assert doc["text"][s["start"] : s["end"]] == s["text"]
            assert sec["start"] <= s["start"] < s["end"] <= sec["end"]
            assert [s["probabilities"][name] for name in LABELS] == pytest.approx(p.tolist(), abs=1e-5)
            assert s["label"] == LABELS[int(p.argmax())] and s["confidence"] == pytest.approx(float(p.max()), abs=1e-5)
    probs = np.concatenate(every)
    assert doc["score"] == pytest.approx(float(np.mean(probs[:, 2] - probs[:, 0])), abs=1e-5)
    assert doc["label"] == analysis.score_label(doc["score"])
    assert sum(doc["counts"].values()) == len(doc["sentences"]) == len(probs)
    assert doc["evidence"] == []


@pytest.mark.slow
def test_press_release_questions_and_csv(lora_run, tmp_path):
    path = tmp_path / "release.md"
    path.write_text(PRESS_RELEASE, encoding="utf-8")
    questions = ["What does the company expect for next year?", "Were jobs cut or plants closed?"]
    argv = [str(path), "--model_dir", str(lora_run), "--ask", *questions, "--top_k", "2"]
    (doc,) = analyze_json(tmp_path, *argv)["documents"]
    assert [e["question"] for e in doc["evidence"]] == questions
    by_start = {s["start"]: s for s in doc["sentences"]}
    titles = []
    for ev in doc["evidence"]:
        sims = [s["similarity"] for s in ev["sentences"]]
        assert len(sims) == 2 and sims == sorted(sims, reverse=True) and -1 <= sims[-1] <= sims[0] <= 1
        for s in ev["sentences"]:
            same = by_start[s["start"]]
            assert (s["text"], s["end"], s["label"], s["confidence"]) == (
                same["text"],
                same["end"],
                same["label"],
                same["confidence"],
            )
        titles.append(doc["sections"][by_start[ev["sentences"][0]["start"]]["section"]]["title"])
    assert titles == ["Outlook", "Risks"]

    out = tmp_path / "report.csv"
    assert main(["analyze", *argv, "--output", str(out)]) == 0
    import csv

    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["sentences"]) + 4
    assert [r["text"] for r in rows[: len(doc["sentences"])]] == [s["text"] for s in doc["sentences"]]
    assert [r["question"] for r in rows[-4:]] == [questions[0]] * 2 + [questions[1]] * 2
    assert rows[0]["section"] == "Acme Oyj interim report January-September 2024"


@pytest.mark.slow
def test_encoder_is_a_normalised_mean_pooled_sentence_encoder():
    from finsent.documents.retrieval import default_encoder

    enc = default_encoder()
    texts = ["Operating profit rose.", "Earnings increased strongly in the quarter.", "The weather in Paris is mild."]
    vecs = enc.encode(texts)
    assert vecs.shape == (3, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    alone = enc.encode(texts[:1])  # no padding: the mask keeps padded positions out of the mean
    assert np.allclose(alone, vecs[:1], atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.1


@pytest.mark.slow
def test_index_and_ask_over_a_corpus(lora_run, predictor, news_md, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "release.md").write_text(PRESS_RELEASE, encoding="utf-8")
    (corpus / "news.md").write_text(news_md[0].read_text(encoding="utf-8"), encoding="utf-8")
    (corpus / "page.html").write_text("<h1>Board</h1><p>The board proposes a dividend of EUR 0.50.</p>")
    pdf_sentence = "Vaisala will cut 40 jobs at its Vantaa factory."
    make_pdf(corpus / "memo.pdf", [["Memo", pdf_sentence]], outline=[("Memo", 0)])
    index = tmp_path / "index"
    assert main(["index", str(corpus), "--output", str(index), "--quiet"]) == 0
    manifest = read_json(index / "index.json")
    docs = [read_document(p) for p in extraction.input_paths([str(corpus)])]
    assert manifest["sentences"] == sum(len(sentences(d)) for d in docs)
    assert [d["source"] for d in manifest["documents"]] == [d.source for d in docs]

    report = analyze_json(
        tmp_path, "--model_dir", str(lora_run), "--index", str(index), "--ask", pdf_sentence, "dividend proposal"
    )
    assert report["documents"] == [] and report["index"]["sentences"] == manifest["sentences"]
    first, second = report["evidence"]
    top = first["sentences"][0]
    assert top["text"] == pdf_sentence and top["source"] == str(corpus / "memo.pdf") and top["similarity"] > 0.99
    expected = predictor.predict([pdf_sentence])[0]
    assert (top["label"], top["confidence"]) == (expected["label"], pytest.approx(expected["confidence"], abs=1e-5))
    assert len(first["sentences"]) == 5
    assert second["sentences"][0]["text"] == "The board proposes a dividend of EUR 0.50."
    page = tmp_path / "answers.html"
    argv = ["analyze", "--model_dir", str(lora_run), "--index", str(index), "--ask", "dividend proposal"]
    assert main([*argv, "--top_k", "2", "--output", str(page)]) == 0
    rows = re.findall(r'<tr><td class="sim">([0-9.]+)</td><td>(.*?)</td>', page.read_text(encoding="utf-8"))
    assert [(float(sim), html.unescape(text)) for sim, text in rows] == [
        (pytest.approx(s["similarity"], abs=1e-3), s["text"]) for s in second["sentences"][:2]
    ]

    assert main(["index", str(corpus / "page.html"), "--output", str(index), "--quiet"]) == 0  # rebuilt in place
    assert read_json(index / "index.json")["sentences"] == 1
    capsys.readouterr()
    assert "not a finsent index" in one_line_error(capsys, ["index", str(corpus), "--output", str(corpus), "--quiet"])
    args = ["--model_dir", str(lora_run), "--index", str(index)]
    assert "not both" in one_line_error(capsys, ["analyze", str(corpus), *args, "--ask", "x"])
    assert "--ask" in one_line_error(capsys, ["analyze", *args])
    assert "not a finsent index" in one_line_error(capsys, ["analyze", *args[:2], "--index", str(corpus), "--ask", "x"])


@pytest.mark.slow
def test_stdin_document(lora_run):
    proc = subprocess.run(
        [sys.executable, "-m", "finsent", "analyze", "-", "--model_dir", str(lora_run)],
        input="# Results\nNet sales rose by 12 %. Operating profit fell.\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (doc,) = json.loads(proc.stdout)["documents"]
    assert doc["source"] == "<stdin>"
    assert [s["title"] for s in doc["sections"]] == ["Results"]  # stdin is read as Markdown, as POST /analyze
    assert [s["text"] for s in doc["sentences"]] == ["Net sales rose by 12 %.", "Operating profit fell."]


@pytest.fixture(scope="module")
def server(lora_run, tmp_path_factory):
    from servers import start_server, stop_server

    log = tmp_path_factory.mktemp("serve-documents") / "server.log"
    proc, url = start_server(lora_run, log)
    yield url
    output = stop_server(proc, log)
    assert "Traceback" not in output and " 500 " not in output, output


@pytest.mark.slow
def test_api_analyze(server, predictor):
    import httpx

    body = {"text": PRESS_RELEASE, "questions": ["What does the company expect for next year?"], "top_k": 3}
    r = httpx.post(server + "/analyze", json=body, timeout=300)
    assert r.status_code == 200, r.text
    got = r.json()
    expected = analysis.analyze_text(predictor, PRESS_RELEASE, body["questions"], 3)
    assert got["model_version"] == expected["model_version"] == "v1"
    (doc,), (want,) = got["documents"], expected["documents"]
    assert [(s["title"], s["label"], s["counts"]) for s in doc["sections"]] == [
        (s["title"], s["label"], s["counts"]) for s in want["sections"]
    ]
    assert [s["text"] for s in doc["sentences"]] == [s["text"] for s in want["sentences"]]
    assert doc["score"] == pytest.approx(want["score"], abs=1e-5)
    assert [s["start"] for s in doc["evidence"][0]["sentences"]] == [
        s["start"] for s in want["evidence"][0]["sentences"]
    ]

    long = "Sales rose. " * (analysis.MAX_DOCUMENT_CHARS // 12 + 1)
    bad = [
        ({"text": ""}, "text"),
        ({"text": "  \n "}, "text is empty"),
        ({"text": long}, "text"),
        ({"text": "Sales rose.", "questions": ["ok", " "]}, "questions[1] is empty"),
        ({"text": "Sales rose.", "questions": ["q"] * (analysis.MAX_QUESTIONS + 1)}, "questions"),
        ({"text": "Sales rose.", "top_k": 0}, "top_k"),
        ({"text": "Sales rose.", "extra": 1}, "extra"),
        ({"texts": ["Sales rose."]}, "text"),
        ({"text": 5}, "text"),
        ({"text": "---\n| 1 | 2 |\n"}, "no sentences found"),
    ]
    for payload, words in bad:
        r = httpx.post(server + "/analyze", json=payload, timeout=60)
        assert r.status_code == 422, (payload if len(str(payload)) < 200 else "long", r.text[:300])
        assert words in r.json()["message"], r.json()["message"]
    r = httpx.post(server + "/analyze", content=b"{not json", headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 422 and "not valid JSON" in r.json()["message"]


@pytest.mark.slow
def test_bench_documents_tiny(lora_run, phrasebank_zip, tmp_path):
    from test_bench import load_script

    bench = load_script("documents")
    argv = ["--model_dir", str(lora_run), "--data_path", str(phrasebank_zip), "--out", str(tmp_path / "documents")]
    assert bench.main([*argv, "--sentences", "40", "--index_sentences", "1500", "--questions", "3"]) == 0
    saved = read_json(tmp_path / "documents.json")
    assert saved["document"]["sentences"] == 40 and saved["document"]["sentences_found"] >= 39
    assert saved["index"]["sentences"] >= 1490 and saved["index"]["documents"] == 2 and saved["index"]["questions"] == 3
    assert 0 < saved["index"]["question_ms"]["p50"] <= saved["index"]["question_ms"]["max"]
    md = (tmp_path / "documents.md").read_text()
    assert "| `finsent analyze` on a 40-sentence document" in md and "p95 <= 100.0 ms" in md


def test_report_csv_neutralises_formulas_unless_raw_csv(tmp_path):
    from finsent.documents.report import write_report

    probs = {"negative": 0.7, "neutral": 0.2, "positive": 0.1}
    sentence = {"text": "-Sales fell 5%", "start": 0, "end": 14, "label": "negative", "confidence": 0.7}
    report = {
        "documents": [
            {
                "source": "=cmd|' /C calc'!A0",
                "sections": [{"title": "@Risks"}],
                "sentences": [{**sentence, "section": 0, "probabilities": probs}],
                "evidence": [{"question": "+What fell?", "sentences": [{**sentence, "similarity": -0.25}]}],
            }
        ]
    }
    write_report(report, tmp_path / "safe.csv")
    write_report(report, tmp_path / "raw.csv", raw_csv=True)
    with open(tmp_path / "safe.csv", newline="", encoding="utf-8") as f:
        safe = list(csv.DictReader(f))
    with open(tmp_path / "raw.csv", newline="", encoding="utf-8") as f:
        raw = list(csv.DictReader(f))
    assert [(r["source"], r["section"], r["text"], r["question"]) for r in raw] == [
        ("=cmd|' /C calc'!A0", "@Risks", "-Sales fell 5%", ""),
        ("=cmd|' /C calc'!A0", "", "-Sales fell 5%", "+What fell?"),
    ]
    text = ("source", "section", "text", "question")
    for s, r in zip(safe, raw):
        assert s == {k: "'" + v if k in text and v[:1] in ("=", "+", "-", "@") else v for k, v in r.items()}
    assert safe[1]["similarity"] == raw[1]["similarity"] == "-0.25"  # a number, not text: as it is
