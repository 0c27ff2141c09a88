"""The `finsent analyze` HTML report in real headless Chromium: highlights, hover, aggregates, offline."""

import json

import pytest

from documentfactory import PRESS_RELEASE, held_out_sentences, sectioned_markdown
from finsent.apps.cli import main

QUESTION = "What does the company expect for next year?"


@pytest.fixture(scope="module")
def reports(lora_run, phrasebank_zip, tmp_path_factory):
    """The same two documents (PhraseBank sections, the release) as report.json and report.html."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "news.md").write_text(sectioned_markdown(held_out_sentences(phrasebank_zip, 6))[0], encoding="utf-8")
    (folder / "release.md").write_text(PRESS_RELEASE, encoding="utf-8")
    inputs = [str(folder / "news.md"), str(folder / "release.md")]
    for name in ("report.json", "report.html"):
        argv = ["analyze", *inputs, "--model_dir", str(lora_run), "--ask", QUESTION, "--output", str(folder / name)]
        assert main(argv) == 0
    return json.loads((folder / "report.json").read_text()), folder / "report.html"


@pytest.mark.slow
def test_report_in_chromium(reports, browser, tmp_path):
    report, html = reports
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems, outside = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
    page.goto(html.as_uri())

    for d, doc in enumerate(report["documents"]):
        root = f"section#d{d}"
        assert page.get_attribute(root, "data-label") == doc["label"]
        assert page.inner_text(f"{root} [data-kpi='score'] b") == f"{doc['score']:+.3f}"
        # every sentence highlighted once, in order, with its label and its probabilities on hover
        spans = page.locator(f"{root} .text span.s")
        assert spans.count() == len(doc["sentences"])
        shown = page.evaluate(
            f"Array.from(document.querySelectorAll('{root} .text span.s')).map(s => [s.textContent, s.dataset.label, s.title])"
        )
        for (text, label, title), s in zip(shown, doc["sentences"]):
            assert text == s["text"] and label == s["label"]
            assert title == " · ".join(f"{k} {v:.3f}" for k, v in s["probabilities"].items())
        # the page text is the extracted text: nothing lost or added around the highlights
        assert page.evaluate(f"document.querySelector('{root} .text').textContent") == doc["text"]
        colours = page.evaluate(
            f"Array.from(document.querySelectorAll('{root} .text span.s')).map(s => getComputedStyle(s).backgroundColor)"
        )
        for colour, s in zip(colours, doc["sentences"]):
            assert (colour == "rgba(0, 0, 0, 0)") == (s["label"] == "neutral"), (colour, s["label"])
        polar = [s for s in doc["sentences"] if s["label"] != "neutral"]
        if polar:
            i = doc["sentences"].index(polar[0])
            page.hover(f"#d{d}-s{i}")
            info = page.inner_text("#info")
            assert info.startswith(polar[0]["label"]) and f"{polar[0]['probabilities']['positive']:.3f}" in info
        # aggregates, trajectory, extremes, questions
        rows = page.locator(f"{root} table.sections tbody tr")
        assert rows.count() == len(doc["sections"])
        for r, sec in enumerate(doc["sections"]):
            assert rows.nth(r).get_attribute("data-label") == sec["label"]
            assert rows.nth(r).locator("[data-count]").all_inner_texts() == [str(v) for v in sec["counts"].values()]
        assert page.locator(f"{root} svg.trajectory rect.bar").count() == len(doc["sentences"])
        polarity = [s["probabilities"]["positive"] - s["probabilities"]["negative"] for s in doc["sentences"]]
        most_negative = page.locator(f"{root} ol.most-negative a").all_inner_texts()
        if min(polarity) < 0:
            assert most_negative[0] == doc["sentences"][polarity.index(min(polarity))]["text"]
        most_positive = page.locator(f"{root} ol.most-positive a").all_inner_texts()
        if max(polarity) > 0:
            assert most_positive[0] == doc["sentences"][polarity.index(max(polarity))]["text"]
        assert page.inner_text(f"{root} h4.question") == QUESTION
        evidence = page.locator(f"{root} table.evidence tbody tr td:nth-child(2)").all_inner_texts()
        assert evidence == [s["text"] for s in doc["evidence"][0]["sentences"]]
        page.click(f"{root} table.evidence tbody tr a")  # jumps to the highlighted sentence
        assert page.evaluate("location.hash").startswith(f"#d{d}-s")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 20_000
    assert not problems, problems
    assert not outside, f"requests left the page: {outside}"
