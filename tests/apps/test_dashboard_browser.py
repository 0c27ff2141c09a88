"""End to end: two short real training runs (LoRA v1, full v2) -> MLflow + calibration -> dashboard -> headless Chromium."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from finsent.core import metrics
from finsent.data.labels import LABELS
from finsent.data.quality import label_issues
from finsent.runs import comparison
from finsent.runs.folder import load_run, read_log
from finsent.training import calibration
from runfactory import write_fake_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TAB_IDS = ("overview", "sources", "errors", "calibration", "data-quality", "comparison")
SOURCES = ("phrasebank", "twitter-financial-news")
PER_RUN_CHARTS = (
    "overview-confidence",
    "overview-balance",
    "overview-confusion",
    "errors-scatter",
    "errors-rate",
    "calibration-reliability",
    "calibration-confidence",
    "data-quality-scores",
)
COMPARISON_CHARTS = ("comparison-metrics", "comparison-per-class", "comparison-changes")


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def test_training_stores_temperature(lora_run, full_run):
    for run in (lora_run, full_run):
        r = results(run)
        assert r["temperature"] > 0 and r["temperature"] != 1.0
        assert r["val_nll_after"] < r["val_nll_before"]
        assert 0 <= r["ece_calibrated"] <= 1


def test_training_runs_are_tracked_in_mlflow(lora_run, full_run, runs_root):
    from mlflow import MlflowClient

    db = runs_root / "mlruns.db"
    assert db.is_file(), "the default store is a SQLite file in the outputs folder"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("finsent")
    tracked = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert {"v1", "v2"} <= set(tracked)
    for run, version, mode in ((lora_run, "v1", "LoRA"), (full_run, "v2", "full")):
        r, mr = results(run), tracked[version]
        assert mr.info.status == "FINISHED"
        assert mr.data.metrics["accuracy"] == pytest.approx(r["accuracy"])
        assert mr.data.metrics["temperature"] == pytest.approx(r["temperature"])
        assert mr.data.params["use_lora"] == str(r["use_lora"]) and mr.data.tags["mode"] == mode
        assert Path(mr.data.tags["run_dir"]) == run.resolve()
        artifacts = {a.path for a in client.list_artifacts(mr.info.run_id)}
        assert {"results.json", "evaluation_log.csv", "val_logits.npz"} <= artifacts
    assert (runs_root / "mlartifacts").is_dir()  # beside the database, not in the working directory


def test_runs_command_lists_both_versions(lora_run, full_run, runs_root):
    proc = subprocess.run(
        [sys.executable, "-m", "finsent", "runs", "--root", str(runs_root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:]}
    assert "LoRA" in rows["v1"] and "full" in rows["v2"]
    assert f"{results(lora_run)['accuracy']:.4f}" in rows["v1"] and f"{results(full_run)['macro_f1']:.4f}" in rows["v2"]


@pytest.fixture(scope="module")
def dashboard(lora_run, full_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("dashboard") / "dashboard.html"
    proc = subprocess.run(
        [sys.executable, "-m", "finsent", "dashboard", "--runs", str(lora_run), str(full_run), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    return out


def test_dashboard_in_chromium(dashboard, browser, lora_run, full_run, tmp_path):
    assert dashboard.stat().st_size < 6_000_000
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems, outside = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
    page.goto(dashboard.as_uri())
    page.wait_for_function("typeof Plotly !== 'undefined' && document.querySelectorAll('.js-plotly-plot').length > 0")

    # every chart: a plotly plot with traces holding data (_fullData: after plotly decoded the typed arrays)
    charts = page.evaluate("""Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => [d.id,
        d.data.length, d._fullData.reduce((n, t) => n + ((t.x && t.x.length) || (t.z && t.z.length) || 0), 0)])""")
    ids = {c[0] for c in charts}
    expected = {f"{c}-{i}" for c in PER_RUN_CHARTS for i in (0, 1)} | set(COMPARISON_CHARTS)
    expected |= {f"sources-confusion-{i}-0" for i in (0, 1)}  # the first source's confusion matrix of each run
    assert expected <= ids, expected - ids
    assert all(n_traces > 0 and n_points > 0 for _, n_traces, n_points in charts), charts

    v1, v2 = results(lora_run), results(full_run)
    kpi = "#overview .run-panel.active [data-kpi='{}'] .kpi-value"
    for tab in TAB_IDS:
        page.click(f"nav.tabs button[data-tab='{tab}']")
        assert page.is_visible(f"section#{tab}")
        assert all(not page.is_visible(f"section#{other}") for other in TAB_IDS if other != tab)
        # the charts now on screen were laid out at their container's width
        widths = page.evaluate(f"""Array.from(document.querySelectorAll('section#{tab} .js-plotly-plot'))
            .filter(d => d.offsetParent !== null).map(d => d.querySelector('.main-svg').getBoundingClientRect().width)""")
        assert widths and min(widths) > 300
        page.screenshot(path=str(tmp_path / f"{tab}.png"), full_page=True)
        if tab == "overview":
            assert page.inner_text(kpi.format("accuracy")) == f"{v1['accuracy']:.4f}"
            assert page.inner_text(kpi.format("ece")) == f"{v1['ece']:.4f}"
            page.select_option("#run-select", "1")
            assert page.inner_text(kpi.format("accuracy")) == f"{v2['accuracy']:.4f}"
            assert page.inner_text(kpi.format("trainable_percent")).startswith("100.00")
            page.screenshot(path=str(tmp_path / "overview-v2.png"), full_page=True)
            page.select_option("#run-select", "0")
        if tab == "sources":
            sources = read_log(lora_run)["source"].unique()
            assert page.locator("#sources-table-0 tbody tr").count() == len(sources)
        if tab == "errors":
            check_error_table(page, read_log(lora_run))
        if tab == "calibration":
            shown = page.inner_text("#calibration .run-panel.active [data-kpi='temperature'] .kpi-value")
            assert shown == f"{v1['temperature']:.3f}"
            run = load_run(lora_run)  # the sampling floor of the scaled test confidences, next to the ECE after scaling
            conf, _ = calibration.calibrated_confidence(calibration.logits_from_probs(run.probs), v1["temperature"])
            note = page.inner_text("#calibration .run-panel.active [data-kpi='ece_after'] .kpi-note")
            assert f"would show {metrics.ece_sampling_floor(conf):.4f} on {len(run.log)} sentences" in note
        if tab == "data-quality":
            issues = label_issues(read_log(lora_run))
            assert page.locator("#data-quality-table-0 tbody tr").count() == len(issues)
            if len(issues):
                first = page.locator("#data-quality-table-0 tbody tr").first.locator("td").all_inner_texts()
                assert first[2:4] == [issues.iloc[0]["given_label"], issues.iloc[0]["suggested_label"]]
        if tab == "comparison":
            counts = comparison.change_counts(comparison.prediction_changes(read_log(lora_run), read_log(full_run)))
            heading = page.inner_text("#comparison h3:has-text('→')")
            assert f"{counts['fixed']} fixed, {counts['broken']} broken" in heading
            assert (
                page.locator("#comparison-flips-1 tbody tr").count()
                == counts["fixed"] + counts["broken"] + counts["changed"]
            )

    assert not problems, problems
    assert not outside, f"requests left the page: {outside}"
    for name in (*TAB_IDS, "overview-v2"):
        assert (tmp_path / f"{name}.png").stat().st_size > 20_000


def check_error_table(page, log):
    table = "#errors-table-0"
    n_errors = int((log["error_type"] != "Correct").sum())
    assert page.locator(f"{table} tbody tr").count() == n_errors
    first = page.locator(f"{table} tbody tr").first.get_attribute("data-type")
    if (log["error_type"] == "High-Confidence Error").any():
        assert first == "High-Confidence Error"
    # filter by type, then by true label
    page.select_option(f"{table} select[data-filter='type']", "Misclassification")
    visible = page.locator(f"{table} tbody tr:visible")
    assert visible.count() == int((log["error_type"] == "Misclassification").sum())
    assert page.inner_text(f"{table} [data-count]") == f"{visible.count()} of {n_errors}"
    page.select_option(f"{table} select[data-filter='type']", "")
    page.select_option(f"{table} select[data-filter='true']", "neutral")
    wanted = int(((log["error_type"] != "Correct") & (log["true_label"] == "neutral")).sum())
    assert page.locator(f"{table} tbody tr:visible").count() == wanted
    page.select_option(f"{table} select[data-filter='true']", "")
    # sort by confidence, ascending
    page.click(f"{table} th:has-text('confidence')")
    values = [float(v) for v in page.locator(f"{table} tbody tr td:nth-child(4)").all_inner_texts()]
    assert values == sorted(values)


def make_old_run(run: Path) -> Path:
    """A run as written before finsent trained on several corpora: no per_source, no source column in its log."""
    r = results(run)
    del r["per_source"]
    (run / "results.json").write_text(json.dumps(r), encoding="utf-8")
    with open(run / "evaluation_log.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(run / "evaluation_log.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, [c for c in rows[0] if c != "source"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return run


@pytest.fixture(scope="module")
def source_runs(tmp_path_factory) -> list[Path]:
    """Two synthetic runs whose test sentences alternate between two sources, and an old run of one source."""
    root = tmp_path_factory.mktemp("source_runs")
    texts = [f"Company {i} reported quarterly figures ({i % 7})." for i in range(120)]
    return [
        write_fake_run(root / "two", "v1", seed=21, texts=texts, sources=SOURCES),
        write_fake_run(root / "again", "v2", seed=22, texts=texts, accuracy=0.93, use_lora=False, sources=SOURCES),
        make_old_run(write_fake_run(root / "old", "v3", seed=23, texts=texts)),
    ]


def log_metrics(log) -> dict:
    """accuracy and macro-F1 of some log rows, computed here from the labels."""
    from sklearn.metrics import f1_score

    return {
        "accuracy": f"{log['is_correct'].mean():.4f}",
        "macro_f1": f"{f1_score(log['true_label'], log['pred_label'], labels=list(LABELS), average='macro'):.4f}",
    }


def test_dashboard_by_source_in_chromium(source_runs, browser, tmp_path):
    out = tmp_path / "dashboard.html"
    proc = subprocess.run(
        [sys.executable, "-m", "finsent", "dashboard", "--runs", *map(str, source_runs), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    logs = [read_log(run) for run in source_runs]
    assert logs[2]["source"].unique().tolist() == ["data"]  # the old log's one source
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(out.as_uri())
    page.wait_for_function("typeof Plotly !== 'undefined' && document.querySelectorAll('.js-plotly-plot').length > 0")

    page.click("nav.tabs button[data-tab='sources']")
    assert page.is_visible("section#sources") and not page.is_visible("section#overview")
    check_source_table(page, 0, logs[0])
    page.screenshot(path=str(tmp_path / "sources.png"), full_page=True)
    page.select_option("#run-select", "2")  # the old run: one row, one confusion matrix, and a sentence saying so
    check_source_table(page, 2, logs[2])
    assert "learned from one source, data" in page.inner_text("#sources .run-panel.active .sources-note")
    page.select_option("#run-select", "0")

    page.click("nav.tabs button[data-tab='errors']")
    check_error_sources(page, logs[0])

    page.click("nav.tabs button[data-tab='comparison']")
    rows = page.locator("#comparison-sources tbody tr")
    assert rows.count() == 2 * len(SOURCES)  # accuracy and macro-F1 of each source the runs share
    for k, name in enumerate(SOURCES):
        base, other = (log_metrics(log[log["source"] == name]) for log in logs[:2])
        for j, (key, label) in enumerate((("accuracy", "accuracy"), ("macro_f1", "macro-F1"))):
            cells = rows.nth(2 * k + j).locator("td").all_inner_texts()
            delta = f"{float(other[key]) - float(base[key]):+.4f}"
            assert cells[:4] == [name, label, base[key], other[key]]
            assert cells[4] == "–" and abs(float(cells[5]) - float(delta)) < 2e-4 and cells[6] == "–"  # v3: no source
    assert "data (v3)" in page.inner_text("#comparison")
    assert not problems, problems


def check_source_table(page, i: int, log):
    """One row per source with the log's accuracy and macro-F1 and test count, and a confusion matrix of its rows."""
    names = list(dict.fromkeys(log["source"]))
    rows = page.locator(f"#sources-table-{i} tbody tr")
    assert rows.count() == len(names)
    for k, name in enumerate(names):
        part = log[log["source"] == name]
        cells = rows.nth(k).locator("td").all_inner_texts()
        assert cells[0] == name
        assert cells[1:3] == [log_metrics(part)["accuracy"], log_metrics(part)["macro_f1"]]
        assert cells[6] == str(len(part))
        div = f"#sources-confusion-{i}-{k}"
        assert page.is_visible(div) and page.locator(f"{div}.js-plotly-plot").count() == 1
        shown = page.evaluate(
            f"Array.from(document.querySelector('{div}')._fullData[0].customdata, r => Array.from(r))"
        )
        expected = [
            [int(((part["true_label"] == t) & (part["pred_label"] == p)).sum()) for p in LABELS] for t in LABELS
        ]
        assert shown == expected
    pooled = page.locator(f"#sources-table-{i} tfoot td").all_inner_texts()
    assert pooled[:2] == (["all sources", log_metrics(log)["accuracy"]] if len(names) > 1 else [])


def check_error_sources(page, log):
    table = "#errors-table-0"
    errors = log[log["error_type"] != "Correct"]
    assert page.locator(f"{table} thead th").all_inner_texts()[6].startswith("source")
    assert set(page.locator(f"{table} tbody tr td:nth-child(7)").all_inner_texts()) == set(errors["source"])
    page.select_option(f"{table} select[data-filter='source']", SOURCES[1])
    visible = page.locator(f"{table} tbody tr:visible")
    assert visible.count() == int((errors["source"] == SOURCES[1]).sum()) > 0
    assert set(visible.locator("td:nth-child(7)").all_inner_texts()) == {SOURCES[1]}
    page.select_option(f"{table} select[data-filter='source']", "")
    assert page.locator(f"{table} tbody tr:visible").count() == len(errors)
