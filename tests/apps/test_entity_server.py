"""`finsent serve` of an entity-level run as a real uvicorn process on 127.0.0.1: items answered per (text, entity),
the 422s for a body of the other task's shape (both ways), and the prediction log and /metrics counting pairs."""

import csv

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from finsent.data.entities import EntityFormat, entity_input
from finsent.monitoring.predlog import read_prediction_logs
from finsent.runs.folder import read_model_info
from servers import start_server, stop_server

pytestmark = pytest.mark.slow

ITEMS = [
    {"text": "Tesla shares jump as Ford cuts guidance", "entities": ["Tesla", "Ford"]},
    {"text": "Apple beats estimates while Microsoft misses", "entities": ["Microsoft", "Apple"]},
    {"text": "Shares of the carmaker fell 5 % after the recall", "entities": ["Volkswagen"]},
]
PAIRS = [(i, e) for i, item in enumerate(ITEMS) for e in item["entities"]]


@pytest.fixture(scope="module")
def served(entity_run, tmp_path_factory) -> dict:
    """One entity server's life: every request sent and /metrics scraped, then stopped; what came back."""
    root = tmp_path_factory.mktemp("entity-serve")
    logs, log = root / "predictions", root / "server.log"
    proc, url = start_server(entity_run, log, "--log_predictions", str(logs))
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            got = {
                "predict": c.post("/predict", json={"items": ITEMS}),
                "invocations": c.post("/invocations", json={"items": ITEMS}),
                "invocations_csv_out": c.post(
                    "/invocations", json={"items": ITEMS[:1]}, headers={"accept": "text/csv"}
                ),
                "texts": c.post("/predict", json={"texts": [ITEMS[0]["text"]]}),
                "texts_invocations": c.post("/invocations", json={"texts": [ITEMS[0]["text"]]}),
                "csv_body": c.post(
                    "/invocations", content=ITEMS[0]["text"].encode(), headers={"content-type": "text/csv"}
                ),
                "no_entities": c.post("/predict", json={"items": [{"text": "Tesla rose", "entities": []}]}),
                "analyze": c.post("/analyze", json={"text": "Tesla rose. Ford fell."}),
                "metadata": c.get("/metadata"),
            }
            got["metrics"] = c.get("/metrics")
    finally:
        output = stop_server(proc, log)
    assert "Traceback" not in output and " 500 " not in output, output
    return {**got, "logs": logs}


def expected(entity_run) -> list[dict]:
    """The in-process Predictor's answers for the pairs, read through the one entity_input of the run's format."""
    from finsent.inference.predictor import Predictor

    fmt = EntityFormat.from_json(read_model_info(entity_run).entity_input)
    inputs = [entity_input(ITEMS[i]["text"], e, fmt) for i, e in PAIRS]
    return Predictor(entity_run, num_threads=1).predict(inputs)


def test_items_are_answered_per_entity(served, entity_run):
    r = served["predict"]
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "e1"
    preds = body["predictions"]
    assert [(p["item"], p["entity"]) for p in preds] == PAIRS
    text0 = ITEMS[0]["text"]
    assert (preds[0]["mention"], preds[0]["start"], preds[0]["end"]) == ("Tesla", 0, 5)
    assert preds[1]["mention"] == "Ford" and text0[preds[1]["start"] : preds[1]["end"]] == "Ford"
    assert ITEMS[1]["text"][preds[2]["start"] : preds[2]["end"]] == "Microsoft"
    assert "mention" not in preds[4] and "start" not in preds[4]  # Volkswagen is not named in the text
    want = expected(entity_run)
    assert [p["label"] for p in preds] == [w["label"] for w in want]
    for p, w in zip(preds, want):
        assert p["probabilities"] == pytest.approx(w["probabilities"], abs=1e-4)
        assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-5) and p["truncated"] is False
    assert preds[0]["probabilities"] != preds[1]["probabilities"]  # one headline, two entities, two inputs


def test_invocations_take_the_same_json(served):
    assert served["invocations"].status_code == 200
    assert served["invocations"].json()["predictions"] == served["predict"].json()["predictions"]
    r = served["invocations_csv_out"]
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(r.text.splitlines()))
    first = served["predict"].json()["predictions"][:2]
    assert [(int(row[0]), row[1], row[2]) for row in rows] == [(p["item"], p["entity"], p["label"]) for p in first]


@pytest.mark.parametrize("name", ["texts", "texts_invocations"])
def test_a_bare_texts_list_is_422_with_one_clear_message(served, name):
    r = served[name]
    assert r.status_code == 422
    body = r.json()
    assert body["message"].startswith('this server runs an entity-level model (e1): send {"items": [')
    assert "names no entities" in body["message"] and len(body["detail"]) == 1


def test_other_bad_entity_bodies_are_422(served):
    r = served["csv_body"]
    assert r.status_code == 422 and "text/csv names no entities" in r.json()["message"]
    r = served["no_entities"]
    assert r.status_code == 422 and r.json()["message"].startswith("items.0.entities: ")
    r = served["analyze"]
    assert r.status_code == 422 and "/analyze scores plain sentences" in r.json()["message"]
    assert served["metadata"].json()["task"] == "entity"


def test_prediction_log_and_metrics_count_each_pair(served):
    preds = served["predict"].json()["predictions"]
    answered = preds * 2 + preds[:2]  # /predict, /invocations, then /invocations answering in CSV
    frame = read_prediction_logs(served["logs"])
    assert len(frame) == len(answered) == 2 * len(PAIRS) + 2
    assert frame["label"].tolist() == [p["label"] for p in answered]
    assert frame["route"].tolist() == ["/predict"] * len(PAIRS) + ["/invocations"] * (len(PAIRS) + 2)
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(served["metrics"].text)
        for s in family.samples
    }
    assert got[("finsent_texts_total", (("route", "/predict"),))] == len(PAIRS)
    assert got[("finsent_texts_total", (("route", "/invocations"),))] == len(PAIRS) + 2


def test_items_to_a_sentence_run_are_422(lora_run, tmp_path):
    proc, url = start_server(lora_run, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            r = c.post("/predict", json={"items": ITEMS})
            ok = c.post("/predict", json={"texts": [ITEMS[0]["text"]]})
            meta = c.get("/metadata").json()
    finally:
        output = stop_server(proc, tmp_path / "server.log")
    assert "Traceback" not in output
    assert r.status_code == 422 and len(r.json()["detail"]) == 1
    assert r.json()["message"].startswith('this server runs a sentence-level model (v1): send {"texts": [')
    assert ok.status_code == 200 and meta["task"] == "sentence"
