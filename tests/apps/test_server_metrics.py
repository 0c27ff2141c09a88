"""A real `finsent serve` with --log_predictions: the Parquet log holds exactly the predictions it answered, GET
/metrics counts what it did (Prometheus text format), and the Grafana dashboard charts only metrics it exports."""

import csv
import json
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from finsent.apps.metrics import NAMES
from finsent.core.text import sentence_hash
from finsent.monitoring.predlog import COLUMNS, read_prediction_logs
from servers import start_server, stop_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "finsent-dashboard.json"
KEY = "m3trics-" + "k" * 24
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


@pytest.fixture(scope="module")
def texts(lora_run) -> list[str]:
    with open(lora_run / "evaluation_log.csv", newline="", encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f)][:20]


def send_requests(c: httpx.Client, texts: list[str]) -> list[tuple[str, str, dict]]:
    """POST /predict and /invocations (JSON, text/csv, text/csv out), one 422 and one unknown path; the answered
    (route, text, prediction) in order."""
    answered = []
    r = c.post("/predict", json={"texts": texts[:5]})
    answered += [("/predict", t, p) for t, p in zip(texts[:5], r.json()["predictions"])]
    r = c.post("/invocations", json={"texts": texts[5:8]})
    answered += [("/invocations", t, p) for t, p in zip(texts[5:8], r.json()["predictions"])]
    r = c.post("/invocations", content="\n".join(texts[8:12]).encode(), headers={"content-type": "text/csv"})
    answered += [("/invocations", t, p) for t, p in zip(texts[8:12], r.json()["predictions"])]
    body = "\n".join(texts[12:14]).encode()
    r = c.post("/invocations", content=body, headers={"content-type": "text/csv", "accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(r.text.splitlines()))
    answered += [
        ("/invocations", t, {"label": row[0], "confidence": float(row[1])}) for t, row in zip(texts[12:14], rows)
    ]
    assert c.post("/predict", json={"texts": []}).status_code == 422
    assert c.get("/no/such/path").status_code == 404
    return answered


@pytest.fixture(scope="module")
def served(lora_run, texts, tmp_path_factory) -> dict:
    """One server's life: requests sent, /metrics scraped, stopped (SIGTERM); what it answered, exported and logged."""
    root = tmp_path_factory.mktemp("metrics")
    logs, log = root / "predictions", root / "server.log"
    proc, url = start_server(lora_run, log, "--log_predictions", str(logs))
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            answered = send_requests(c, texts)
            scrape = c.get("/metrics")
    finally:
        output = stop_server(proc, log)
    assert "Traceback" not in output and " 500 " not in output, output
    return {"answered": answered, "scrape": scrape, "logs": logs}


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, from the Prometheus text format."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_log_holds_exactly_the_answered_predictions(served):
    answered = served["answered"]
    frame = read_prediction_logs(served["logs"])
    assert list(frame.columns) == list(COLUMNS) and "text" not in frame.columns
    assert len(frame) == len(answered) == 14
    assert frame["route"].tolist() == [route for route, _, _ in answered]
    assert frame["label"].tolist() == [p["label"] for _, _, p in answered]
    assert frame["confidence"].tolist() == pytest.approx([p["confidence"] for _, _, p in answered], abs=1e-6)
    assert frame["sentence_hash"].tolist() == [sentence_hash(t) for _, t, _ in answered]
    assert frame["text_length"].tolist() == [len(t) for _, t, _ in answered]
    for (_, _, p), (_, row) in zip(answered, frame.iterrows()):
        if "probabilities" in p:
            assert [row[f"prob_{k}"] for k in p["probabilities"]] == pytest.approx(list(p["probabilities"].values()))
    assert set(frame["model_version"]) == {"v1"} and set(frame["backend"]) == {"torch"}
    assert frame["answered_by"].isna().all() and (frame["latency_ms"] > 0).all()
    assert (frame["margin"] >= 0).all() and (frame["margin"] <= frame["confidence"]).all()


def test_metrics_count_the_requests_texts_and_labels(served):
    scrape = served["scrape"]
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    got = samples(scrape.text)
    requests = {labels: v for (name, labels), v in got.items() if name == "finsent_requests_total"}
    by_route = {(dict(k)["route"], dict(k)["status"]): v for k, v in requests.items()}
    assert by_route[("/predict", "200")] == 1 and by_route[("/predict", "422")] == 1
    assert by_route[("/invocations", "200")] == 3 and by_route[("other", "404")] == 1
    assert by_route[("/health", "200")] >= 1  # the start-up helper's polls
    assert not any(route.startswith("/no") for route, _ in by_route)  # unknown paths are "other": bounded labels
    assert got[("finsent_texts_total", (("route", "/predict"),))] == 5
    assert got[("finsent_texts_total", (("route", "/invocations"),))] == 9
    labels = Counter(p["label"] for _, _, p in served["answered"])
    for label in ("negative", "neutral", "positive"):
        assert got[("finsent_predictions_total", (("label", label),))] == labels[label]
    assert got[("finsent_model_info", (("backend", "torch"), ("version", "v1")))] == 1
    assert got[("finsent_confidence_count", ())] == 14
    assert got[("finsent_batch_size_sum", ())] == 14 and got[("finsent_batch_size_count", ())] >= 1
    assert got[("finsent_request_latency_seconds_count", (("route", "/predict"),))] == 2
    assert got[("finsent_queue_depth", ())] == 0 and got[("finsent_prediction_log_dropped_total", ())] == 0


def test_every_metric_named_in_the_module_is_exported(served):
    exported = {name for name, _ in samples(served["scrape"].text)}
    for name in NAMES:
        assert name in exported or any(name + s in exported for s in SUFFIXES), name


def dashboard_queries(node) -> list[str]:
    """Every PromQL expression of the dashboard: the panels' expr and the variables' queries."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found += dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            found += dashboard_queries(item)
    return found


def test_the_grafana_dashboard_charts_only_exported_metrics(served):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"]), panel["title"]
    exported = {name for name, _ in samples(served["scrape"].text)}
    queries = dashboard_queries(dashboard)
    used = {name for q in queries for name in re.findall(r"finsent_[a-z_]+", q)}
    assert len(queries) >= 15 and len(used) >= 9
    assert sorted(used - exported) == []
    for name in NAMES:  # and every metric the server exports is charted
        assert any(u == name or u.removeprefix(name) in SUFFIXES for u in used), name


def test_metrics_public_and_log_text(lora_run, texts, tmp_path):
    """With an API key, --metrics_public opens /metrics only; --log_text stores the texts."""
    logs, log = tmp_path / "predictions", tmp_path / "server.log"
    flags = ("--log_predictions", str(logs), "--log_text", "--metrics_public")
    proc, url = start_server(lora_run, log, *flags, env={"FINSENT_API_KEY": KEY})
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            scrape = c.get("/metrics")  # no key needed
            assert scrape.status_code == 200
            assert ("finsent_model_info", (("backend", "torch"), ("version", "v1"))) in samples(scrape.text)
            assert c.post("/predict", json={"texts": texts[:2]}).status_code == 401  # the rest still needs it
            assert c.get("/metadata").status_code == 401
            r = c.post("/predict", json={"texts": texts[:3]}, headers={"Authorization": f"Bearer {KEY}"})
            assert r.status_code == 200
            got = samples(c.get("/metrics").text)
            assert got[("finsent_requests_total", (("route", "/predict"), ("status", "401")))] == 1
            assert got[("finsent_requests_total", (("route", "/predict"), ("status", "200")))] == 1
    finally:
        output = stop_server(proc, log)
    assert "Traceback" not in output and KEY not in output, output
    frame = read_prediction_logs(logs)
    assert frame["text"].tolist() == texts[:3]
    assert frame["label"].tolist() == [p["label"] for p in r.json()["predictions"]]
