"""The dashboard of entity-level runs in headless Chromium: the entity column of the errors table, the mixed-accuracy
KPI, the mixed-label view; a sentence run beside them looks as before (no entity column, no mixed view)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finsent.data.quality import label_issues
from finsent.runs import comparison
from finsent.runs.folder import read_log
from runfactory import write_fake_run

ROOT = Path(__file__).resolve().parents[2]
SENTENCE_HEADERS = ["type", "true", "predicted", "confidence", "margin", "id", "source", "sentence"]


def headlines(n_texts: int) -> tuple[list[str], list[str]]:
    """(text, entity) pairs: each headline names two companies, every third a third one."""
    texts, entities = [], []
    for i in range(n_texts):
        names = [f"Acme{i}", f"Globex{i}"] + ([f"Initech{i}"] if i % 3 == 0 else [])
        text = f"{' and '.join(names)} report quarterly figures ({i})."
        texts += [text] * len(names)
        entities += names
    return texts, entities


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two fake entity runs on the same pairs (v1, v2) and a fake sentence run (v3)."""
    root = tmp_path_factory.mktemp("entity_runs")
    texts, entities = headlines(50)
    n = len(texts)
    return [
        write_fake_run(root / "e1", "v1", seed=31, n=n, texts=texts, entities=entities, accuracy=0.7),
        write_fake_run(root / "e2", "v2", seed=32, n=n, texts=texts, entities=entities, accuracy=0.9),
        write_fake_run(root / "s3", "v3", seed=33, n=120),
    ]


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text(encoding="utf-8"))


def build(run_dirs, out: Path) -> Path:
    argv = [sys.executable, "-m", "finsent", "dashboard", "--runs", *map(str, run_dirs), "--out", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(path.as_uri())
    page.wait_for_function("typeof Plotly !== 'undefined' && document.querySelectorAll('.js-plotly-plot').length > 0")
    return page, problems


def mixed_texts(log) -> dict[str, list[tuple[str, str, str]]]:
    """The log's texts whose entities carry different gold labels: text -> [(entity, true, predicted)]."""
    out: dict[str, list] = {}
    for r in log.itertuples():
        out.setdefault(r.text, []).append((r.entity, r.true_label, r.pred_label))
    return {t: rows for t, rows in out.items() if len({true for _, true, _ in rows}) > 1}


def check_mixed_view(page, i: int, run: Path) -> None:
    """Every mixed-label text once, with each of its entities' true and predicted labels; the filter to errors."""
    log, r = read_log(run), results(run)
    want = mixed_texts(log)
    assert r["n_mixed"] == sum(map(len, want.values())) > 0
    box = f"#mixed-{i}"
    bodies = page.locator(f"{box} tbody.mixed-text")
    assert bodies.count() == len(want)
    shown = {}
    for k in range(bodies.count()):
        body = bodies.nth(k)
        text = body.locator("td.text").inner_text()
        shown[text] = [
            (tr.get_attribute("data-entity"), tr.get_attribute("data-true"), tr.get_attribute("data-pred"))
            for tr in body.locator("tr").all()
        ]
    assert shown == want
    right = page.locator(f"{box} tr.right").count()
    assert right / r["n_mixed"] == pytest.approx(r["mixed_accuracy"])
    assert f"{right} of {r['n_mixed']}" in page.inner_text("#errors .run-panel.active h3 + p.note")
    wrong_texts = sum(any(true != pred for _, true, pred in rows) for rows in want.values())
    page.check(f"{box} [data-mixed-errors]")
    assert page.locator(f"{box} tbody.mixed-text:visible").count() == wrong_texts
    assert page.inner_text(f"{box} [data-count]") == f"{wrong_texts} of {len(want)}"
    page.uncheck(f"{box} [data-mixed-errors]")
    assert page.locator(f"{box} tbody.mixed-text:visible").count() == len(want)


def check_entity_errors(page, i: int, run: Path) -> None:
    table = f"#errors-table-{i}"
    log = read_log(run)
    errors = log[log["error_type"] != "Correct"]
    assert page.locator(f"{table} thead th").all_inner_texts()[7:9] == ["entity", "text"]
    rows = page.locator(f"{table} tbody tr")
    assert rows.count() == len(errors)
    shown = sorted(zip(rows.locator("td:nth-child(6)").all_inner_texts(), rows.locator("td.entity").all_inner_texts()))
    assert shown == sorted(zip(errors["sample_id"].astype(str), errors["entity"]))
    name = errors["entity"].iloc[0]
    page.fill(f"{table} input[data-filter='entity']", name)
    visible = page.locator(f"{table} tbody tr:visible")
    assert visible.count() == int(errors["entity"].str.lower().str.contains(name.lower(), regex=False).sum()) > 0
    page.fill(f"{table} input[data-filter='entity']", "")


def test_entity_runs_in_chromium(runs, browser, tmp_path):
    page, problems = open_page(browser, build(runs, tmp_path / "dashboard.html"))
    kpi = "#overview .run-panel.active [data-kpi='{}'] .kpi-value"
    for i, run in enumerate(runs[:2]):
        page.select_option("#run-select", str(i))
        assert page.inner_text(kpi.format("mixed_accuracy")) == f"{results(run)['mixed_accuracy']:.4f}"
    page.select_option("#run-select", "2")
    assert page.locator("#overview .run-panel.active [data-kpi='mixed_accuracy']").count() == 0
    assert page.inner_text(kpi.format("accuracy")) == f"{results(runs[2])['accuracy']:.4f}"

    page.click("nav.tabs button[data-tab='errors']")
    for i, run in enumerate(runs[:2]):
        page.select_option("#run-select", str(i))
        check_entity_errors(page, i, run)
        check_mixed_view(page, i, run)
    page.select_option("#run-select", "2")  # the sentence run: the table as before, no mixed view
    assert page.locator("#errors-table-2 thead th").all_inner_texts() == SENTENCE_HEADERS
    assert (
        page.locator("#mixed-2").count() == 0
        and page.locator("#errors-table-2 input[data-filter='entity']").count() == 0
    )
    page.screenshot(path=str(tmp_path / "errors.png"), full_page=True)

    page.click("nav.tabs button[data-tab='sources']")
    page.select_option("#run-select", "0")
    assert page.locator("#sources-table-0 thead th").all_inner_texts()[-1] == "mixed accuracy"
    assert (
        page.locator("#sources-table-0 tbody td").all_inner_texts()[-1] == f"{results(runs[0])['mixed_accuracy']:.4f}"
    )
    assert "mixed accuracy" not in page.locator("#sources-table-2 thead th").all_inner_texts()

    page.click("nav.tabs button[data-tab='data-quality']")
    issues = label_issues(read_log(runs[0]))
    assert len(issues) > 0  # the synthetic v1 is 70 % right: cleanlab flags some of its labels
    cells = page.locator("#data-quality-table-0 tbody tr").first.locator("td").all_inner_texts()
    assert page.locator("#data-quality-table-0 thead th").all_inner_texts()[-2:] == ["entity", "text"]
    entity_of = dict(zip(read_log(runs[0])["sample_id"], read_log(runs[0])["entity"]))
    assert cells[-2:] == [entity_of[issues.iloc[0]["sample_id"]], issues.iloc[0]["text"]]

    page.click("nav.tabs button[data-tab='comparison']")  # v1 -> v2 matched by (text, entity); v3 shares no pair
    counts = comparison.change_counts(comparison.prediction_changes(read_log(runs[0]), read_log(runs[1])))
    logs = [read_log(run) for run in runs[:2]]
    assert sum(counts.values()) == int((logs[0]["true_label"] == logs[1]["true_label"]).sum())  # pair by pair
    assert f"{counts['fixed']} fixed, {counts['broken']} broken" in page.inner_text(
        "#comparison h3:has-text('v1 → v2')"
    )
    flips = page.locator("#comparison-flips-1 tbody tr")
    assert flips.count() == counts["fixed"] + counts["broken"] + counts["changed"]
    assert "entity" in page.locator("#comparison-flips-1 thead th").all_inner_texts()
    assert "of 0 sentences scored by both" in page.inner_text("#comparison h3:has-text('v1 → v3')")
    assert not problems, problems


def test_real_entity_run_in_chromium(entity_run, browser, tmp_path):
    page, problems = open_page(browser, build([entity_run], tmp_path / "dashboard.html"))
    r = results(entity_run)
    assert r["task"] == "entity"
    shown = page.inner_text("#overview .run-panel.active [data-kpi='mixed_accuracy'] .kpi-value")
    assert shown == (f"{r['mixed_accuracy']:.4f}" if r["mixed_accuracy"] is not None else "–")
    page.click("nav.tabs button[data-tab='errors']")
    log = read_log(entity_run)
    assert (log["entity"] != "").all()
    assert page.locator("#errors-table-0 tbody tr").count() == int((log["error_type"] != "Correct").sum())
    assert page.locator("#mixed-0 tbody tr").count() == r["n_mixed"]
    assert page.locator("#mixed-0 tbody.mixed-text").count() == len(mixed_texts(log))
    assert not problems, problems
