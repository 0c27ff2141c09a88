"""The server's fast path (finsent.apps.fast_path) in process over a real run: a plain JSON request is answered
without FastAPI's route, and the answer is the one the route gives; every other request reaches the route unchanged."""

import csv
import json

import pytest
from starlette.testclient import TestClient

from finsent.apps import entity_api
from finsent.apps.server import create_app
from finsent.inference.predictor import Predictor

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def app(lora_run):
    return create_app(Predictor(lora_run))


@pytest.fixture
def routed(monkeypatch):
    """Counts the requests FastAPI's /predict and /invocations routes read (the fast path never calls read_json)."""
    calls = []
    read_json = entity_api.read_json

    def counted(predictor, data):
        calls.append(data)
        return read_json(predictor, data)

    monkeypatch.setattr(entity_api, "read_json", counted)
    return calls


def test_a_plain_request_skips_the_route_and_gets_the_routes_answer(app, routed, logged_texts):
    body = json.dumps({"texts": logged_texts}).encode()
    with TestClient(app) as client:
        fast = client.post("/predict", content=body, headers=JSON)
        assert fast.status_code == 200 and routed == []
        chunked = client.post("/predict", content=iter([body[:7], body[7:]]), headers=JSON)  # no Content-Length
        with_bom = client.post("/predict", content=b"\xef\xbb\xbf" + body, headers=JSON)  # not plain JSON to pydantic
        assert len(routed) == 2 and chunked.status_code == with_bom.status_code == 200
        assert fast.json() == chunked.json() == with_bom.json()
        assert fast.headers["content-type"] == chunked.headers["content-type"] == "application/json"
        invocations = client.post("/invocations", content=body, headers={**JSON, "accept": "application/json"})
        assert invocations.json() == fast.json() and len(routed) == 2
        as_csv = client.post("/invocations", content=body, headers={**JSON, "accept": "text/csv"})
        assert as_csv.headers["content-type"].startswith("text/csv") and len(routed) == 3
        metrics = client.get("/metrics").text
    assert 'finsent_requests_total{route="/predict",status="200"} 3.0' in metrics
    assert f'finsent_texts_total{{route="/predict"}} {3.0 * len(logged_texts)}' in metrics


def test_bad_requests_reach_the_route_with_their_body(app, routed):
    with TestClient(app) as client:
        empty = client.post("/predict", content=b'{"texts": ["Profit rose", "  "]}', headers=JSON)
        assert empty.status_code == 422 and "texts[1] is empty" in empty.json()["message"]
        broken = client.post("/predict", content=b'{"texts": [', headers=JSON)
        assert broken.status_code == 422 and "not valid JSON" in broken.json()["message"]
        items = client.post("/predict", json={"items": [{"text": "Tesla rose", "entities": ["Tesla"]}]})
        assert items.status_code == 422 and "sentence-level model" in items.json()["message"]
        plain_text = client.post("/predict", content=b'{"texts": ["a"]}', headers={"content-type": "text/plain"})
        assert plain_text.status_code == 415
    assert len(routed) == 2  # the route read the two JSON bodies; the broken one and the 415 stopped before read_json


@pytest.fixture(scope="module")
def logged_texts(lora_run):
    with open(lora_run / "evaluation_log.csv", newline="", encoding="utf-8") as f:
        return [row["text"] for row in list(csv.DictReader(f))[:6]]
