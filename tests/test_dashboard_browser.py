"""End to end: two short real training runs (LoRA v1, full v2) -> MLflow + calibration -> dashboard -> headless Chromium."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finsent import calibration, comparison, metrics
from finsent.data_quality import label_issues
from finsent.runs import load_run, read_log

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TAB_IDS = ("overview", "errors", "calibration", "data-quality", "comparison")
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
