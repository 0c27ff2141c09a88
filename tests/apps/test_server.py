"""`finsent serve` as a real uvicorn process on 127.0.0.1: endpoints, every bad input (422, never 500), load."""

import csv
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from finsent.apps.schemas import MAX_TEXT_CHARS, MAX_TEXTS
from finsent.core.hardware import usable_cores
from finsent.inference.engines import tuned_engine
from servers import free_port, start_server, stop_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LONG = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 . " * 12


@pytest.fixture(scope="module")
def server(lora_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    proc, url = start_server(lora_run, log)
    yield url
    output = stop_server(proc, log)
    assert "Traceback" not in output and " 500 " not in output, output


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def logged(lora_run):
    with open(lora_run / "evaluation_log.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_health_metadata_and_docs(client, lora_run):
    assert client.get("/health").json()["status"] == "ok"
    meta = client.get("/metadata").json()
    results = json.loads((lora_run / "results.json").read_text())
    assert meta["version"] == "v1" and meta["backend"] == "torch"
    assert meta["labels"] == ["negative", "neutral", "positive"]
    assert meta["metrics"]["accuracy"] == results["accuracy"] and meta["metrics"]["macro_f1"] == results["macro_f1"]
    assert meta["temperature"] == pytest.approx(results.get("temperature", 1.0))
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/metadata"} <= set(schema["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_predict_returns_the_models_labels(client, logged):
    rows = logged[:25]
    r = client.post("/predict", json={"texts": [row["text"] for row in rows]})
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == "v1" and body["backend"] == "torch"
    preds = body["predictions"]
    assert [p["label"] for p in preds] == [row["pred_label"] for row in rows]
    for p in preds:
        assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert p["confidence"] == max(p["probabilities"].values())
        assert p["truncated"] is False


def test_long_text_is_truncated_and_flagged(client):
    r = client.post("/predict", json={"texts": ["Sales rose .", LONG]})
    assert r.status_code == 200
    assert [p["truncated"] for p in r.json()["predictions"]] == [False, True]


BAD = {
    "empty list": {"texts": []},
    "empty string": {"texts": ["Profit rose", ""]},
    "whitespace": {"texts": ["   \n"]},
    "number": {"texts": ["Profit rose", 42]},
    "null": {"texts": [None]},
    "nested list": {"texts": [["Profit rose"]]},
    "string not list": {"texts": "Profit rose"},
    "missing texts": {"text": ["Profit rose"]},
    "extra field": {"texts": ["Profit rose"], "model_dir": "/etc"},
    "too many": {"texts": ["Profit rose"] * (MAX_TEXTS + 1)},
    "too long": {"texts": ["x" * (MAX_TEXT_CHARS + 1)]},
    "not an object": ["Profit rose"],
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_json_input_is_422_with_a_message(client, name):
    r = client.post("/predict", json=BAD[name])
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["message"] and body["detail"]
    if name in ("empty list", "too many"):
        assert "texts" in body["message"] and (
            "at least 1" in body["message"] or f"at most {MAX_TEXTS}" in body["message"]
        )
    if name in ("empty string", "whitespace"):
        assert "is empty" in body["message"]


@pytest.mark.parametrize(
    "content,headers",
    [
        (b"{not json", {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
        (b'{"texts": ["a"]}', {"content-type": "text/plain"}),
        ('{"texts": ["\xff"]}'.encode("latin-1"), {"content-type": "application/json"}),
    ],
)
def test_malformed_bodies_are_4xx_not_500(client, content, headers):
    r = client.post("/predict", content=content, headers=headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    if content.startswith(b"{not"):
        assert r.status_code == 422 and "not valid JSON" in r.json()["message"]


def test_lone_surrogate_is_422_and_does_not_disturb_other_requests(client, logged):
    r = client.post(
        "/predict",
        content=b'{"texts": ["Profit rose", "bad \\ud800 escape"]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "texts[1] is not valid Unicode" in r.json()["message"]
    assert (
        client.post("/predict", json={"texts": [logged[0]["text"]]}).json()["predictions"][0]["label"]
        == logged[0]["pred_label"]
    )


def test_oversized_body_and_wrong_methods(client):
    huge = json.dumps({"texts": ["x" * 9000] * 2000}).encode()
    assert client.post("/predict", content=huge, headers={"content-type": "application/json"}).status_code == 413
    assert client.get("/predict").status_code == 405
    assert client.get("/nope").status_code == 404


def test_load_2000_requests_from_16_clients(server, client, logged):
    texts = [row["text"] for row in logged]
    expected = {row["text"]: row["pred_label"] for row in logged}
    before = client.get("/metadata").json()["serving"]

    def work(worker: int) -> list[str]:
        errors = []
        with httpx.Client(base_url=server, timeout=120) as c:
            for i in range(125):
                batch = [texts[(worker * 131 + i * 7 + k) % len(texts)] for k in range(1 + i % 3)]
                try:
                    r = c.post("/predict", json={"texts": batch})
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                labels = [p["label"] for p in r.json()["predictions"]]
                if labels != [expected[t] for t in batch]:
                    errors.append(f"labels {labels} for {batch}")
        return errors

    with ThreadPoolExecutor(16) as pool:
        errors = [e for errs in pool.map(work, range(16)) for e in errs]
    assert errors == [], errors[:5]
    after = client.get("/metadata").json()["serving"]
    served = after["requests_served"] - before["requests_served"]
    batches = after["forward_batches"] - before["forward_batches"]
    assert served == 2000
    assert batches < served, "concurrent requests were never batched together"


def test_onnx_backend_server(onnx_run, tmp_path, logged):
    log = tmp_path / "onnx.log"
    proc, url = start_server(onnx_run, log, "--backend", "onnx")
    try:
        meta = httpx.get(url + "/metadata", timeout=30).json()
        tuned = tuned_engine(onnx_run / "onnx", onnx_only=True)[0]  # the fastest ONNX engine on this CPU
        assert meta["backend"] == "onnx" and meta["onnx"]["file"] == tuned.file
        assert meta["onnx"]["runtime"] == tuned.runtime and meta["precision"] == tuned.precision
        r = httpx.post(url + "/predict", json={"texts": [row["text"] for row in logged[:5]] + [LONG]}, timeout=60)
        assert r.status_code == 200
        preds = r.json()["predictions"]
        assert len(preds) == 6 and preds[-1]["truncated"] is True
        assert httpx.post(url + "/predict", json={"texts": []}, timeout=30).status_code == 422
        # two streams by default on two cores: batches scored at once, each request still gets its own answers
        assert meta["serving"]["streams"] == (2 if usable_cores() >= 2 else 1)
        texts = [row["text"] for row in logged[:24]]
        alone = [httpx.post(url + "/predict", json={"texts": [t]}, timeout=60).json()["predictions"][0] for t in texts]
        with ThreadPoolExecutor(8) as pool:
            together = list(
                pool.map(lambda t: httpx.post(url + "/predict", json={"texts": [t]}, timeout=60).json(), texts)
            )
        assert [r["predictions"][0]["label"] for r in together] == [p["label"] for p in alone]
        assert all(abs(r["predictions"][0]["confidence"] - p["confidence"]) < 0.02 for r, p in zip(together, alone))
    finally:
        output = stop_server(proc, log)
    assert "Traceback" not in output


def test_serve_refuses_a_missing_model_or_onnx_export(tmp_path, lora_run):
    for argv, message in [
        (["--model_dir", str(tmp_path / "nope")], "no such run folder"),
        (["--model_dir", str(lora_run), "--backend", "onnx"], "finsent export-onnx"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "finsent", "serve", *argv, "--port", str(free_port())],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1].startswith("finsent: error: ") and message in proc.stderr
        assert "Traceback" not in proc.stderr


DEEP = {
    "100,000 nested arrays": b"[" * 100_000 + b"]" * 100_000,
    "100,000 nested objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "deep inside texts": b'{"texts": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
}

BAD_UTF8 = '{"texts": ["Profit \xff rose"]}'.encode("latin-1")


@pytest.mark.parametrize("path", ["/predict", "/invocations"])
def test_unreadable_bodies_are_422_with_a_readable_message(client, path):
    json_headers = {"content-type": "application/json"}
    cases = [
        (
            BAD_UTF8,
            json_headers,
            f"not valid UTF-8 (byte 0xff at position {BAD_UTF8.index(0xFF)})",
        ),
        (b'{"texts": ["Profit rose"', json_headers, "not valid JSON"),
        (b"{'texts': ['Profit rose']}", json_headers, "not valid JSON"),
        *[(body, json_headers, "nested too deeply") for body in DEEP.values()],
    ]
    if path == "/invocations":
        cases.append(
            ("Profit rose\nSales fell \xe9\n".encode("latin-1"), {"content-type": "text/csv"}, "not valid UTF-8")
        )
    for content, headers, expected in cases:
        r = client.post(path, content=content, headers=headers)
        assert r.status_code == 422, (content[:40], r.status_code, r.text[:300])
        assert expected in r.json()["message"], r.json()
    assert client.get("/health").status_code == 200  # the server survived them


def test_ping_and_invocations_answer_as_predict(client, logged):
    assert client.get("/ping").status_code == 200
    texts = [row["text"] for row in logged[:6]] + ['Profit rose, sales fell , and "margins" widened .']
    predicted = client.post("/predict", json={"texts": texts}).json()
    as_json = client.post("/invocations", json={"texts": texts})
    assert as_json.status_code == 200 and as_json.json() == predicted

    # text/csv: one sentence a line; quoting allowed (a quoted field may hold commas, quotes and line breaks)
    quoted = 'The board said: "sales fell",\nand profit too .'
    lines = [*texts, quoted]
    body = "\n".join(texts).encode() + b"\n" + ('"' + quoted.replace('"', '""') + '"\n').encode()
    expected = client.post("/predict", json={"texts": lines}).json()
    r = client.post("/invocations", content=body, headers={"content-type": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == expected

    r = client.post("/invocations", content=body, headers={"content-type": "text/csv", "accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(r.text.splitlines()))
    assert len(rows) == len(lines)
    for row, p in zip(rows, expected["predictions"]):
        assert row[0] == p["label"] and float(row[1]) == pytest.approx(p["confidence"])
        probs = p["probabilities"]
        assert [float(x) for x in row[2:]] == pytest.approx([probs["negative"], probs["neutral"], probs["positive"]])

    r = client.post("/invocations", content=b"Profit rose\n\nSales fell\n", headers={"content-type": "text/csv"})
    assert r.status_code == 422 and "texts[1] is empty" in r.json()["message"]
    r = client.post("/invocations", content=b"Profit rose", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "text/csv" in r.json()["message"]


def test_cors_is_off_unless_configured(client):
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/predict", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/health", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in r.headers


KEY = "k3y-" + "x" * 28


@pytest.fixture(scope="module")
def keyed_server(lora_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-key") / "server.log"
    proc, url = start_server(lora_run, log, env={"FINSENT_API_KEY": KEY})
    yield url
    output = stop_server(proc, log)
    assert "Traceback" not in output and " 500 " not in output and KEY not in output, output


def test_api_key_guards_every_route_but_health_and_ping(keyed_server, logged):
    text = logged[0]["text"]
    with httpx.Client(base_url=keyed_server, timeout=60) as c:
        assert c.get("/health").status_code == 200 and c.get("/ping").status_code == 200
        guarded = [
            ("POST", "/predict"),
            ("POST", "/invocations"),
            ("GET", "/metadata"),
            ("GET", "/docs"),
            ("GET", "/metrics"),
        ]
        for method, path in guarded:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Basic {KEY}"},
                {"Authorization": KEY},
            ):
                r = c.request(method, path, json={"texts": [text]}, headers=headers)
                assert r.status_code == 401, (path, headers, r.status_code)
                assert r.headers["www-authenticate"] == "Bearer"
                assert "Authorization: Bearer" in r.json()["message"]
        right = {"Authorization": f"Bearer {KEY}"}
        r = c.post("/predict", json={"texts": [text]}, headers=right)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == logged[0]["pred_label"]
        assert c.get("/metadata", headers={"authorization": f"bearer {KEY}"}).status_code == 200
        assert c.get("/metrics", headers=right).status_code == 200
        r = c.post("/predict", content=b"[" * 100_000, headers={**right, "content-type": "application/json"})
        assert r.status_code == 422


def test_api_key_file_and_cors_origins(lora_run, tmp_path, logged):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    origin = "https://app.example.com"
    log = tmp_path / "server.log"
    proc, url = start_server(lora_run, log, "--api_key_file", str(key_file), "--cors_origins", origin)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.post("/predict", json={"texts": ["Profit rose"]}).status_code == 401
            r = c.post(
                "/predict",
                json={"texts": [logged[0]["text"]]},
                headers={"Authorization": f"Bearer {KEY}", "Origin": origin},
            )
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
            preflight = {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            }
            r = c.options("/predict", headers={**preflight, "Origin": origin})
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
            r = c.options("/predict", headers={**preflight, "Origin": "https://elsewhere.example"})
            assert "access-control-allow-origin" not in r.headers
    finally:
        output = stop_server(proc, log)
    assert "Traceback" not in output and KEY not in output
