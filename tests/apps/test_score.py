"""`finsent score`: shard discovery and reading, resumable atomic Parquet output, local vs Ray engines, S3 on moto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import DATA_ZIP, ROOT, finish_within, pipeline_threads
from finsent.apps import score_ray, shards
from finsent.apps.cli import main
from finsent.apps.score import ScoreConfig, discover_shards
from finsent.core.errors import FinsentError
from finsent.runs.folder import WEIGHT_FILES


def phrasebank_sentences(n: int) -> list[str]:
    """The first n AllAgree sentences, as users would have them (no labels)."""
    with zipfile.ZipFile(DATA_ZIP) as z:
        name = next(p for p in z.namelist() if p.endswith("Sentences_AllAgree.txt"))
        lines = z.read(name).decode("latin-1").splitlines()
    return [line.rsplit("@", 1)[0].strip() for line in lines if "@" in line][:n]


def write_shards(folder: Path, texts: list[str], parts: int = 3) -> list[Path]:
    """The texts split over a CSV, a JSONL and a Parquet file (ids keep the order), with one empty text."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(texts) // parts)
    paths = []
    for k in range(parts):
        rows = pd.DataFrame({"id": range(k * size, min((k + 1) * size, len(texts))), "text": texts[k * size :][:size]})
        if k == 0:
            rows.loc[rows.index[1], "text"] = ""
        fmt = ("csv", "jsonl", "parquet")[k % 3]
        path = folder / f"part-{k}.{fmt}"
        if fmt == "csv":
            rows.to_csv(path, index=False, encoding="utf-8-sig")
        elif fmt == "jsonl":
            rows.to_json(path, orient="records", lines=True, force_ascii=False)
        else:
            rows.to_parquet(path)
        paths.append(path)
    return paths


def read_output(folder: Path) -> dict[str, pa.Table]:
    return {str(p.relative_to(folder)): pq.read_table(p) for p in sorted(folder.rglob("*.parquet"))}


def score_cli(*args: str) -> int:
    """`finsent score` in-process; one thread and 10-row chunks everywhere, so that outputs compare bit for bit."""
    return main(["score", "--quiet", "--threads", "1", "--chunk_size", "10", *args])


# --- fast: no model ---------------------------------------------------------------------------------------------


def test_discovery_of_a_folder_a_glob_and_a_file(tmp_path):
    data = tmp_path / "in"
    (data / "2024").mkdir(parents=True)
    for name in ("a.csv", "2024/b.jsonl", "2024/c.parquet", "notes.txt", ".hidden.csv", "_SUCCESS", "d.csv.gz"):
        (data / name).write_bytes(b"text\nx\n")
    (data / "scored").mkdir()
    (data / "scored" / "a.parquet").write_bytes(b"output of an earlier run inside the input folder")
    shards = discover_shards(str(data), str(data / "scored"))
    assert [s.name for s in shards] == ["2024/b.jsonl", "2024/c.parquet", "a.csv", "d.csv.gz"]
    assert [s.output_name for s in shards] == ["2024/b.parquet", "2024/c.parquet", "a.parquet", "d.parquet"]
    assert all(s.size == 7 and s.version for s in shards)
    assert [s.name for s in discover_shards(str(data / "2024" / "*.jsonl"))] == ["b.jsonl"]
    assert [s.name for s in discover_shards(str(data / "a.csv"))] == ["a.csv"]
    (data / "2024" / "a.csv").write_bytes(b"text\ny\n")
    assert [s.name for s in discover_shards(str(data / "*" / "a.csv"))] == ["2024/a.csv"]
    (data / "2024" / "b.csv").write_bytes(b"text\ny\n")
    with pytest.raises(FinsentError, match="2024/b.csv and 2024/b.jsonl would both be written to 2024/b.parquet"):
        discover_shards(str(data))
    with pytest.raises(FinsentError, match="no such file or folder"):
        discover_shards(str(tmp_path / "missing"))
    with pytest.raises(FinsentError, match="no .csv, .tsv, .jsonl or .parquet files"):
        discover_shards(str(data / "*.xlsx"))


def test_read_shard_formats_chunks_and_bom(tmp_path):
    texts = [f'Sales rose {i} %, "a lot"' for i in range(10)]
    frame = pd.DataFrame({"id": [f"{i:03d}" for i in range(10)], "text": texts})
    frame.to_csv(tmp_path / "a.csv", index=False, encoding="utf-8-sig")  # with a BOM
    frame.to_csv(tmp_path / "a.tsv", index=False, sep="\t")
    frame.to_json(tmp_path / "a.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "a.parquet")
    for name in ("a.csv", "a.tsv", "a.jsonl", "a.parquet"):
        chunks = list(shards._read_shard(str(tmp_path / name), "text", 4))
        assert [c.num_rows for c in chunks] == [4, 4, 2], name
        table = pa.concat_tables(chunks)
        assert table.column("text").to_pylist() == texts, name
    csv_ids = pa.concat_tables(shards._read_shard(str(tmp_path / "a.csv"), "text", 4)).column("id")
    assert csv_ids.to_pylist() == list(frame["id"])  # CSV cells stay strings: "007" is not 7
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    assert [c.num_rows for c in shards._read_shard(str(tmp_path / "empty.parquet"), "text", 4)] == [0]
    (tmp_path / "header.csv").write_text("id,text\n")
    (header_only,) = shards._read_shard(str(tmp_path / "header.csv"), "text", 4)
    assert header_only.num_rows == 0 and header_only.column_names == ["id", "text"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.csv", b"headline,id\nProfit rose,1\n", "a.csv: no column 'text' in the header \\['headline', 'id'\\]"),
        ("a.csv", b"text,id\nProfit rose,1\nSales fell,2,3\n", "a.csv:3: 1 more cells than the header's 2 columns"),
        ("a.parquet", b"PAR1 this is not parquet", "a.parquet: not a readable Parquet file"),
        ("a.jsonl", b'{"text": "Profit rose"}\n{"text": \n', "a.jsonl:2: invalid JSON"),
        ("a.jsonl", b'{"text": 1}\n', "a.jsonl: column 'text' holds int64, not text; set --text_column"),
        ("a.csv.gz", b"\x1f\x8b\x08\x00 not really gzip", "a.csv.gz: not a readable gzip file"),
        ("a.csv", b"", "a.csv: empty file"),
    ],
)
def test_bad_shards_are_named(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(FinsentError, match=message):
        list(shards._read_shard(str(tmp_path / name), "text"))


def test_bad_options_and_inputs_exit_2_with_one_line(tmp_path, capsys):
    with pytest.raises(FinsentError, match="--ray_address needs --engine ray"):
        ScoreConfig("m", "i", "o", ray_address="auto")
    with pytest.raises(FinsentError, match="--num_workers 0: must be at least 1"):
        ScoreConfig("m", "i", "o", engine="ray", num_workers=0)
    with pytest.raises(FinsentError, match="--onnx_runtime 'tvm': expected one of openvino, onnxruntime"):
        ScoreConfig("m", "i", "o", backend="onnx", onnx_runtime="tvm")
    assert score_cli("--model_dir", "m", "--input", str(tmp_path / "none"), "--output", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file or folder" in err and "Traceback" not in err


def test_missing_extras_name_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(FinsentError, match='--engine ray needs Ray Data: pip install "finsent\\[scale\\]"'):
        score_ray._import_ray()
    import fsspec  # noqa: F401 - its registry module, below

    monkeypatch.setitem(sys.modules, "s3fs", None)
    monkeypatch.delitem(
        sys.modules["fsspec.registry"]._registry, "s3", raising=False
    )  # as if s3fs had never been imported
    with pytest.raises(FinsentError, match='s3://bucket/in: .*; pip install "finsent\\[scale\\]"'):
        shards.discover_shards("s3://bucket/in")


@pytest.fixture
def aws_env(monkeypatch):
    """Dummy credentials, no retries, and fresh s3fs instances (they cache the endpoint they were made with)."""
    import s3fs

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    yield monkeypatch
    s3fs.S3FileSystem.clear_instance_cache()


def test_unreachable_endpoint_and_missing_credentials(aws_env, tmp_path, capsys):
    aws_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    assert score_cli("--model_dir", "m", "--input", "s3://bucket/in", "--output", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the storage endpoint (AWS_ENDPOINT_URL=http://127.0.0.1:9)" in err
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        aws_env.delenv(key)
    aws_env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    aws_env.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert score_cli("--model_dir", "m", "--input", "s3://bucket/in", "--output", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no AWS credentials found; set AWS_ACCESS_KEY_ID" in err


# --- slow: the real LoRA run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return phrasebank_sentences(150)


@pytest.fixture(scope="module")
def clean_run(lora_run, sentences, tmp_path_factory) -> tuple[Path, Path]:
    """Three shards scored in one uninterrupted local run: (input folder, output folder)."""
    root = tmp_path_factory.mktemp("clean")
    write_shards(root / "in", sentences)
    assert score_cli("--model_dir", str(lora_run), "--input", str(root / "in"), "--output", str(root / "out")) == 0
    return root / "in", root / "out"


@pytest.mark.slow
def test_local_engine_output_matches_the_predictor(lora_run, clean_run, sentences):
    from finsent.inference.predictor import Predictor

    _, out = clean_run
    tables = read_output(out)
    assert list(tables) == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    ids = [int(i) for t in tables.values() for i in t.column("id").to_pylist()]  # CSV ids stay strings
    assert ids == list(range(len(sentences)))  # every row once, in input order
    column = {
        name: [x for t in tables.values() for x in t.column(name).to_pylist()]
        for name in ("text", "label", "prob_positive", "truncated")
    }
    scores = Predictor(lora_run, num_threads=1).score([t for t in column["text"] if t])
    labels = column["label"]
    assert labels[1] is None and column["truncated"][1] is None  # the empty text: nulls
    assert [x for x in labels if x is not None] == [p["label"] for p in scores.records()]
    # unrounded on both sides (records() rounds to 6 decimals); the engine scores 10-row chunks and the Predictor all
    # rows at once, so the batches (and their padding) differ and float sums run in another order: 1e-5, not bit for bit
    probs = [x for x in column["prob_positive"] if x is not None]
    assert probs == pytest.approx(scores.probs[:, scores.labels.index("positive")].tolist(), abs=1e-5)
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"] == len(sentences) and summary["empty"] == 1 and summary["model"]["version"] == "v1"
    assert sum(summary["label_counts"].values()) == len(sentences) - 1 and summary["shards_scored_this_run"] == 3
    meta = json.loads(pq.read_metadata(out / "part-1.parquet").metadata[b"finsent"])
    assert meta["rows"] == 50 and meta["source"]["input"] == "part-1.jsonl" and meta["source"]["size"] > 0


def test_onnx_backend_on_either_runtime_gives_the_predictors_labels(onnx_run, sentences, tmp_path):
    from finsent.inference.predictor import Predictor

    write_shards(tmp_path / "in", sentences)
    for runtime in ("openvino", "onnxruntime"):
        out = tmp_path / runtime
        argv = ["--model_dir", str(onnx_run), "--input", str(tmp_path / "in"), "--output", str(out)]
        assert score_cli(*argv, "--backend", "onnx", "--onnx_runtime", runtime) == 0
        labels = [x for t in read_output(out).values() for x in t.column("label").to_pylist() if x is not None]
        texts = [x for t in read_output(out).values() for x in t.column("text").to_pylist() if x]
        expected = Predictor(onnx_run, "onnx", num_threads=1, onnx_runtime=runtime).predict(texts)
        assert labels == [p["label"] for p in expected], runtime


@pytest.mark.slow
def test_rerun_skips_done_shards_and_a_changed_input_is_scored_again(lora_run, clean_run, tmp_path):
    import shutil

    data, out = clean_run
    shutil.copytree(data, tmp_path / "in")
    shutil.copytree(out, tmp_path / "out")
    before = read_output(tmp_path / "out")
    changed = pd.read_parquet(tmp_path / "in" / "part-2.parquet").iloc[:7]
    changed.to_parquet(tmp_path / "in" / "part-2.parquet")
    args = ("--model_dir", str(lora_run), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert score_cli(*args) == 0
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert [s["scored_now"] for s in summary["shards"]] == [False, False, True] and summary["rows"] == 107
    after = read_output(tmp_path / "out")
    assert after["part-0.parquet"].equals(before["part-0.parquet"]) and after["part-2.parquet"].num_rows == 7


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_doubling_rows(lora_run, clean_run, tmp_path):
    """kill -9 while a shard is half written, re-run: the result equals the uninterrupted run's."""
    data, clean_out = clean_run
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "finsent", "score", "--model_dir", str(lora_run), "--input", str(data)]
    cmd += ["--output", str(out), "--chunk_size", "10", "--threads", "1", "--quiet"]  # as score_cli
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob("*.parquet")) and list(out.glob(".*.tmp")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = list(out.glob(".*.tmp"))
    assert partial and not (out / "_summary.json").exists()
    published = read_output(out)
    for name, table in published.items():  # whatever was published is complete
        assert table.num_rows == read_output(clean_out)[name].num_rows
    assert score_cli("--model_dir", str(lora_run), "--input", str(data), "--output", str(out)) == 0
    assert not list(out.glob(".*.tmp"))  # the half-written shard's temp file is gone
    resumed, clean = read_output(out), read_output(clean_out)
    assert list(resumed) == list(clean) and all(resumed[k].equals(clean[k]) for k in clean)
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["shards_done_earlier"] == len(published) >= 1 and summary["rows"] == 150


@pytest.mark.slow
def test_bad_shard_fails_in_one_line_and_done_shards_stay_done(lora_run, sentences, tmp_path, capsys):
    data = tmp_path / "in"
    write_shards(data, sentences[:40], parts=2)
    (data / "part-9.parquet").write_bytes(b"PAR1 not really")
    (data / "part-5.csv").write_text("headline\nProfit rose\n")
    args = ("--model_dir", str(lora_run), "--input", str(data), "--output", str(tmp_path / "out"))
    assert score_cli(*args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "part-5.csv: no column 'text' in the header ['headline']" in err
    assert sorted(read_output(tmp_path / "out")) == ["part-0.parquet", "part-1.parquet"]
    (data / "part-5.csv").write_text("text\nProfit rose\n")
    assert score_cli(*args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "part-9.parquet: not a readable Parquet file" in err and "Traceback" not in err
    (data / "part-9.parquet").unlink()
    assert score_cli(*args) == 0
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert [(s["input"], s["scored_now"]) for s in summary["shards"]] == [
        ("part-0.csv", False),
        ("part-1.jsonl", False),
        ("part-5.csv", False),
    ]


def test_overlapped_batches_keep_row_order(lora_run, sentences, tmp_path):
    """Chunks of 7 read ahead across three shards, scored, and written behind: every shard's rows in input order with
    the predictions of one plain Predictor.score call."""
    from finsent.inference.predictor import Predictor

    write_shards(tmp_path / "in", sentences)
    argv = ["score", "--quiet", "--threads", "1", "--chunk_size", "7"]
    assert (
        finish_within(
            600,
            main,
            [*argv, "--model_dir", str(lora_run), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")],
        )
        == 0
    )
    tables = read_output(tmp_path / "out")
    assert list(tables) == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert [t.num_rows for t in tables.values()] == [50, 50, 50]
    ids = [int(i) for t in tables.values() for i in t.column("id").to_pylist()]
    texts = [x for t in tables.values() for x in t.column("text").to_pylist()]
    assert ids == list(range(len(sentences))) and texts == ["" if i == 1 else s for i, s in enumerate(sentences)]
    labels = [x for t in tables.values() for x in t.column("label").to_pylist() if x is not None]
    probs = [x for t in tables.values() for x in t.column("prob_positive").to_pylist() if x is not None]
    scores = Predictor(lora_run, num_threads=1).score([t for t in texts if t])
    assert labels == [p["label"] for p in scores.records()]
    assert probs == pytest.approx(scores.probs[:, scores.labels.index("positive")].tolist(), abs=1e-5)
    assert not list((tmp_path / "out").glob(".*.tmp")) and pipeline_threads() == []


def test_a_bad_row_mid_shard_discards_its_partial_output(lora_run, sentences, tmp_path, capsys):
    """A row 30 rows into the second shard fails after its first chunks were written: the first shard is published,
    the second's temp file removed, one line (exit 2)."""
    data = tmp_path / "in"
    write_shards(data, sentences[:40], parts=2)
    lines = ["id,text", *[f"{i},Sales rose {i} percent" for i in range(40)]]
    lines[31] += ",an extra cell"
    (data / "part-1.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "part-1.jsonl").unlink()
    argv = ["score", "--quiet", "--threads", "1", "--chunk_size", "7", "--model_dir", str(lora_run)]
    assert finish_within(600, main, [*argv, "--input", str(data), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "part-1.csv:32: 1 more cells than the header's 2 columns" in err, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-0.parquet"]  # no temp file
    assert pipeline_threads() == []


def test_a_failing_write_stops_the_engine_and_removes_the_temp_file(lora_run, sentences, tmp_path, monkeypatch):
    from finsent.apps.score import score

    write_shards(tmp_path / "in", sentences, parts=3)
    real_write, written = shards.ShardOutput.write, []

    def full_disk(self, table):
        if len(written) == 9:  # the 2nd chunk of the 2nd shard (50 rows a shard: 7 chunks of 7 and one of 1)
            raise OSError(28, "No space left on device")
        written.append(table.num_rows)
        real_write(self, table)

    monkeypatch.setattr(shards.ShardOutput, "write", full_disk)
    cfg = ScoreConfig(str(lora_run), str(tmp_path / "in"), str(tmp_path / "out"), chunk_size=7, threads=1, quiet=True)
    with pytest.raises(OSError, match="No space left on device"):
        finish_within(600, score, cfg)
    assert written == [7] * 7 + [1] + [7]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-0.parquet"]  # published; no temp file
    assert pipeline_threads() == []


@pytest.mark.slow
def test_ray_engine_gives_the_local_engines_output(lora_run, clean_run, tmp_path, capsys):
    """A real local Ray (2 actors, one Predictor each) scores the same shards to the same Parquet tables."""
    import shutil

    data, clean_out = clean_run
    shutil.copytree(data, tmp_path / "in")
    (tmp_path / "in" / "part-3.parquet").write_bytes(b"PAR1 not really")  # fails in a Ray task: one line, exit 2
    args = ("--model_dir", str(lora_run), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert score_cli(*args, "--engine", "ray", "--num_workers", "2") == 2
    err = capsys.readouterr().err
    assert "finsent: error: " in err and "part-3.parquet: not a readable Parquet file" in err and "Traceback" not in err
    local_tables = read_output(clean_out)
    for name, table in read_output(tmp_path / "out").items():  # whatever the failed run published is complete
        assert table.equals(local_tables[name]), name
    (tmp_path / "in" / "part-3.parquet").unlink()
    assert score_cli(*args, "--engine", "ray", "--num_workers", "2") == 0
    ray_tables = read_output(tmp_path / "out")
    assert list(ray_tables) == list(local_tables)
    for name in local_tables:
        assert ray_tables[name].equals(local_tables[name]), name
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["engine"] == "ray" and summary["num_workers"] == 2 and summary["rows"] == 150


@pytest.fixture
def s3(aws_env):
    """A real S3 API (moto's server) on 127.0.0.1, reached through AWS_ENDPOINT_URL like any S3-compatible store."""
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    aws_env.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3fs.S3FileSystem()
    server.stop()


@pytest.mark.slow
def test_s3_input_output_and_model(s3, lora_run, clean_run, tmp_path, monkeypatch):
    data, clean_out = clean_run
    s3.mkdir("news")
    s3.mkdir("models")
    s3.put(str(data), "news/in", recursive=True)
    s3.put(str(lora_run), "models/v1", recursive=True)
    monkeypatch.setenv("FINSENT_CACHE", str(tmp_path / "cache"))
    args = ("--model_dir", "s3://models/v1", "--input", "s3://news/in", "--output", "s3://news/out")
    assert score_cli(*args) == 0
    cached = tmp_path / "cache" / "s3" / "models" / "v1"
    weights = next(name for name in WEIGHT_FILES if (lora_run / name).is_file())
    assert (cached / weights).read_bytes() == (lora_run / weights).read_bytes()
    for name, table in read_output(clean_out).items():
        with s3.open(f"news/out/{name}", "rb") as f:
            assert pq.read_table(f).equals(table), name
    summary = json.loads(s3.cat_file("news/out/_summary.json"))
    assert summary["rows"] == 150 and summary["model"]["model_dir"] == "s3://models/v1"
    (cached / weights).write_bytes(b"damaged")  # a damaged cache is noticed and fetched again
    s3.rm("news/out/part-1.parquet")
    assert score_cli(*args) == 0
    assert (cached / weights).read_bytes() == (lora_run / weights).read_bytes()
    summary = json.loads(s3.cat_file("news/out/_summary.json"))
    assert [s["scored_now"] for s in summary["shards"]] == [False, True, False]
    with s3.open("news/out/part-1.parquet", "rb") as f:
        assert pq.read_table(f).equals(read_output(clean_out)["part-1.parquet"])


@pytest.mark.slow
def test_scale_benchmark_on_a_tiny_input(lora_run, phrasebank_zip, tmp_path):
    from test_bench import load_script

    scale = load_script("scale")
    argv = ["--model_dir", str(lora_run), "--data_path", str(phrasebank_zip), "--n", "300", "--shards", "3"]
    assert scale.main([*argv, "--engines", "local", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "scale.json").read_text())
    (row,) = saved["rows"]
    assert row["engine"] == "local" and row["output_rows"] == row["input_rows"] == 300
    assert row["rows_per_s"] > 0 and row["peak_rss_mb"] > 100 and len(row["rss_samples_mb"]) >= 1
    assert "100-core Ray cluster" in (tmp_path / "scale.md").read_text()
