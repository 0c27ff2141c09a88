"""`finsent runs`, `finsent dashboard` and `finsent export` through the real command line, incl. bad input."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finsent.apps.dashboard.sources import confusion_counts, source_comparison, source_metrics
from finsent.apps.dashboard.views import TABS, build_html
from finsent.data.labels import LABELS
from finsent.runs.catalog import load_runs
from runfactory import write_fake_run

ROOT = Path(__file__).resolve().parents[2]


def finsent(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "finsent", *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT, timeout=300
    )


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory):
    """Two good synthetic runs, one with corrupt JSON, one with a broken CSV, one interrupted (no results)."""
    root = tmp_path_factory.mktemp("fake_runs")
    texts = [f"Company {i} reported quarterly figures ({i % 7})." for i in range(120)]
    write_fake_run(root / "a", "v1", seed=1, texts=texts)
    write_fake_run(root / "b", "v2", seed=2, texts=texts, accuracy=0.9, use_lora=False)
    write_fake_run(root / "badjson", "v3", seed=3)
    (root / "badjson" / "results.json").write_text('{"version": "v3", "accuracy": 0.9', encoding="utf-8")
    write_fake_run(root / "badcsv", "v4", seed=4)
    lines = (root / "badcsv" / "evaluation_log.csv").read_text(encoding="utf-8").splitlines()
    lines[5] = lines[5].replace(",0.", ",abc", 1)
    (root / "badcsv" / "evaluation_log.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "interrupted").mkdir()
    (root / "interrupted" / "finsent_model.json").write_text('{"version": "v5"}', encoding="utf-8")
    return root


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("finsent: error: ")
    return last


def test_runs_table(fake_runs):
    proc = finsent("runs", "--root", fake_runs)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:8] == ["version", "date", "model", "mode", "accuracy", "macro-F1", "ECE", "training"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"v1", "v2", "v4"}  # the table needs results.json only; v4's broken CSV does not matter here
    for version, folder, mode in (("v1", "a", "LoRA"), ("v2", "b", "full")):
        r = results(fake_runs / folder)
        cells = rows[version].split()
        assert mode in cells and f"{r['accuracy']:.4f}" in cells and f"{r['macro_f1']:.4f}" in cells
        assert f"{r['ece']:.4f}" in cells and f"{r['train_runtime_s']:.0f}s" in cells
    warnings = [w for w in proc.stderr.splitlines() if w]
    assert len(warnings) == 2 and all(w.startswith("finsent: warning: ") for w in warnings)
    assert any(str(fake_runs / "badjson" / "results.json") in w for w in warnings)
    assert any(str(fake_runs / "interrupted" / "results.json") in w for w in warnings)


def test_runs_without_runs_is_one_line_exit_2(tmp_path):
    line = one_error_line(finsent("runs", "--root", tmp_path))
    assert str(tmp_path) in line
    assert str(tmp_path / "nope") in one_error_line(finsent("runs", "--root", tmp_path / "nope"))


def test_dashboard_skips_bad_runs_with_one_line_each(fake_runs, tmp_path):
    out = tmp_path / "dash.html"
    proc = finsent(
        "dashboard",
        "--runs",
        fake_runs / "a",
        fake_runs / "badjson",
        fake_runs / "badcsv",
        fake_runs / "missing",
        fake_runs / "b",
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("finsent: warning: ") for w in warnings)
    assert str(fake_runs / "badjson" / "results.json") in warnings[0] and "JSON" in warnings[0]
    assert str(fake_runs / "badcsv" / "evaluation_log.csv") in warnings[1] and "confidence" in warnings[1]
    assert str(fake_runs / "missing") in warnings[2]
    assert "2 runs" in proc.stdout and out.is_file()
    page = out.read_text(encoding="utf-8")
    assert 'id="warnings"' in page and "badjson" in page  # the page says what was skipped, too
    assert (
        page.count('class="run-panel" data-run="1"') == len(TABS) - 2
    )  # every per-run view (not comparison, production)


def test_dashboard_without_readable_runs_is_exit_2(fake_runs, tmp_path):
    proc = finsent("dashboard", "--runs", fake_runs / "badjson", tmp_path / "nothing", "--out", tmp_path / "d.html")
    line = one_error_line(proc)
    assert "no readable run folder" in line and str(fake_runs / "badjson") in line
    assert not (tmp_path / "d.html").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error_line(finsent("export", "--runs", empty, "--out", tmp_path / "csv"))


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_export_tidy_csvs(fake_runs, tmp_path):
    proc = finsent("export", "--runs", fake_runs, "--out", tmp_path)  # a folder of run folders
    assert proc.returncode == 0, proc.stderr
    good = {"v1": results(fake_runs / "a"), "v2": results(fake_runs / "b")}
    runs = read_csv(tmp_path / "runs.csv")
    assert [r["version"] for r in runs] == ["v1", "v2"]  # oldest first
    for r in runs:
        res = good[r["version"]]
        assert float(r["accuracy"]) == pytest.approx(res["accuracy"]) and float(r["ece"]) == pytest.approx(res["ece"])
        assert r["mode"] == ("LoRA" if res["use_lora"] else "full") and int(r["n_test"]) == res["n_test"]
    preds = read_csv(tmp_path / "predictions.csv")
    assert len(preds) == sum(res["n_test"] for res in good.values())
    assert list(preds[0])[:4] == ["run", "sample_id", "source", "text"] and "error_type" in preds[0]
    for version, res in good.items():
        mine = [p for p in preds if p["run"] == version]
        assert np.mean([p["is_correct"] == "True" for p in mine]) == pytest.approx(res["accuracy"])
    per_class = read_csv(tmp_path / "per_class_metrics.csv")
    assert len(per_class) == 2 * len(LABELS)
    for row in per_class:
        m = good[row["version"]]["per_class"][row["label"]]
        assert float(row["f1"]) == pytest.approx(m["f1"]) and int(row["support"]) == m["support"]
        assert float(row["error_rate"]) == pytest.approx(1 - m["recall"])
    confusion = read_csv(tmp_path / "confusion_matrix.csv")
    for version, res in good.items():
        cm = np.zeros((3, 3), int)
        for row in (c for c in confusion if c["version"] == version):
            cm[LABELS.index(row["true_label"]), LABELS.index(row["pred_label"])] = int(row["count"])
        assert cm.tolist() == res["confusion_matrix"]
    per_source = read_csv(tmp_path / "per_source_metrics.csv")
    assert sorted((r["version"], r["source"]) for r in per_source) == [("v1", "data"), ("v2", "data")]
    for row in per_source:
        assert float(row["accuracy"]) == pytest.approx(good[row["version"]]["per_source"]["data"]["accuracy"])


def test_export_neutralises_formulas_unless_raw_csv(tmp_path):
    from finsent.apps.powerbi import export_runs

    texts = ['=HYPERLINK("http://x")', "-5% margin", "@SUM(A1)"] + [f"Sentence number {i}." for i in range(3, 120)]
    write_fake_run(tmp_path / "r1", "v1", seed=11, texts=texts)
    runs = load_runs([tmp_path / "r1"])
    export_runs(runs, tmp_path / "safe")
    export_runs(runs, tmp_path / "raw", raw_csv=True)
    safe, raw = read_csv(tmp_path / "safe" / "predictions.csv"), read_csv(tmp_path / "raw" / "predictions.csv")
    assert sorted(p["text"] for p in raw)[:3] == sorted(texts[:3])
    assert sorted(p["text"] for p in safe)[:3] == sorted("'" + t for t in texts[:3])
    assert [{k: v for k, v in p.items() if k != "text"} for p in safe] == [
        {k: v for k, v in p.items() if k != "text"} for p in raw
    ]  # numbers (negative ones too) and the other cells as they were
    for name in ("runs.csv", "per_class_metrics.csv", "confusion_matrix.csv", "per_source_metrics.csv"):
        assert (tmp_path / "safe" / name).read_bytes() == (tmp_path / "raw" / name).read_bytes()


def test_html_is_self_contained_and_escapes_sentences(tmp_path):
    hostile = "Profit </script><script>window.pwned=1</script> & <b>bold</b> rose"
    texts = [hostile] + [f"Sentence number {i}." for i in range(1, 120)]
    write_fake_run(tmp_path / "r1", "v1", seed=11, texts=texts)
    write_fake_run(tmp_path / "r2", "v2", seed=12, texts=texts)
    page = build_html(load_runs([tmp_path / "r1", tmp_path / "r2"]))
    for tab, _ in TABS:
        assert f'<section class="tab" id="{tab}">' in page
    assert hostile not in page and "window.pwned=1</script>" not in page
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)  # nothing loaded from elsewhere
    assert page.count("plotly.js v") <= 2  # the library banner: inlined once
    assert len(page) < 6_000_000


def test_source_metrics_from_results_or_the_log(tmp_path):
    """per_source as results.json stores it; where it has none, the same numbers from the log grouped by source."""
    sources = ("phrasebank", "sentfin", "twitter-financial-news")
    texts = [f"Sentence number {i}." for i in range(150)]
    write_fake_run(tmp_path / "a", "v1", seed=5, n=150, texts=texts, sources=sources)
    stored = results(tmp_path / "a")["per_source"]
    assert list(stored) == list(sources) and all(stored[s]["n_test"] == 50 for s in sources)
    (run,) = load_runs([tmp_path / "a"])
    found = source_metrics(run)
    assert found == {
        s: {
            k: stored[s].get(k) for k in ("accuracy", "macro_f1", "ece", "n_train", "n_val", "n_test", "mixed_accuracy")
        }
        for s in sources
    }
    del run.results["per_source"]  # a run without per_source: computed from the log
    computed = source_metrics(run)
    for name in sources:
        assert computed[name]["accuracy"] == pytest.approx(run.log[run.log["source"] == name]["is_correct"].mean())
        for key in ("macro_f1", "ece"):
            assert computed[name][key] == pytest.approx(stored[name][key], abs=1e-5)
        assert computed[name]["n_test"] == 50 and computed[name]["n_train"] is None
    assert (
        sum(np.array(confusion_counts(run.log[run.log["source"] == s])) for s in sources).tolist()
        == (run.results["confusion_matrix"])
    )
    run.log["source"] = "data"  # an old run: one unnamed source, whose counts are the pooled ones
    old = source_metrics(run)["data"]
    assert old["accuracy"] == pytest.approx(run.results["accuracy"]) and old["ece"] == pytest.approx(run.results["ece"])
    assert (old["n_train"], old["n_val"], old["n_test"]) == (500, 150, 150)


def test_source_comparison_rows_for_shared_sources(tmp_path):
    texts = [f"Sentence number {i}." for i in range(120)]
    write_fake_run(tmp_path / "a", "v1", seed=7, texts=texts, sources=("phrasebank", "sentfin"))
    write_fake_run(tmp_path / "b", "v2", seed=8, texts=texts, sources=("finentity", "sentfin"))
    write_fake_run(tmp_path / "c", "v3", seed=9, texts=texts)
    runs = load_runs([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    found = source_comparison(runs)
    a, b = (results(tmp_path / n)["per_source"]["sentfin"] for n in ("a", "b"))
    assert [r["cells"][:2] for r in found["rows"]] == [["sentfin", "accuracy"], ["sentfin", "macro-F1"]]
    for row, key in zip(found["rows"], ("accuracy", "macro_f1")):
        assert row["cells"][2:] == [f"{a[key]:.4f}", f"{b[key]:.4f}", "–"]
        assert row["deltas"][0]["text"] == f"{b[key] - a[key]:+.4f}" and row["deltas"][1]["text"] == "–"
        assert row["deltas"][0]["cls"] == ("up" if b[key] > a[key] else "down" if b[key] < a[key] else "")
    assert found["unshared"] == ["phrasebank (v1)", "finentity (v2)", "data (v3)"]
    assert source_comparison(runs[2:] + runs[:1])["rows"] == []  # no source in common
