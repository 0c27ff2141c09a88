"""`finsent predict`: arguments, stdin, csv/jsonl/txt in, csv/jsonl out, streaming, and bad input (exit 2)."""

import csv
import inspect
import io
import json
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from conftest import finish_within, finsent_subprocess, pipeline_threads
from finsent.apps import cli, predict
from finsent.apps.cli import main
from finsent.inference.predictor import Predictor, Scores

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = [
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 .",
    "The company said it will cut 300 jobs after sales fell sharply .",
    "The annual general meeting will be held on 15 April .",
    "Net sales increased by 18.5 % , and the order book grew .",
    "Pre-tax loss totaled EUR 0.3 mn , compared to a profit of EUR 2.2 mn .",
]
PRED_COLUMNS = ["label", "confidence", "prob_negative", "prob_neutral", "prob_positive", "truncated"]


@pytest.fixture(scope="module")
def shared_predictor(lora_run):
    return Predictor(lora_run, "torch")


@pytest.fixture
def run_cli(shared_predictor, lora_run, monkeypatch):
    """Call `finsent predict ...` in-process with the model loaded once for the module."""
    monkeypatch.setattr(cli.serving, "predictor_for", lambda args, model_dir=None: shared_predictor)

    def run(*argv):
        return main(["predict", "--model_dir", str(lora_run), "--quiet", *argv])

    return run


@pytest.fixture(scope="module")
def expected(shared_predictor):
    return {t: p for t, p in zip(SENTENCES, shared_predictor.predict(SENTENCES))}


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def check_row(row, pred):
    assert row["label"] == pred["label"]
    # both rounded to 6 decimals, but maybe scored in other batches (other padding, so another order of float sums)
    assert float(row["confidence"]) == pytest.approx(pred["confidence"], abs=1e-5)
    probs = [float(row[f"prob_{k}"]) for k in ("negative", "neutral", "positive")]
    assert sum(probs) == pytest.approx(1, abs=1e-5) and max(probs) == pytest.approx(float(row["confidence"]))
    assert str(row["truncated"]) in ("False", "false")


def test_arguments_to_jsonl_on_stdout(run_cli, capsys, expected):
    assert run_cli(*SENTENCES) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == SENTENCES
    for row in rows:
        check_row(row, expected[row["text"]])


def test_csv_to_csv_keeps_order_and_columns(run_cli, tmp_path, expected):
    src = tmp_path / "headlines.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "headline", "source"])
        for i, text in enumerate(SENTENCES):
            w.writerow([f"n{i}", text, 'wire, "quoted"\nsecond line'])
        w.writerow(["n-empty", "", "blank"])
    out = tmp_path / "out" / "scored.csv"
    assert run_cli("--input", str(src), "--text_column", "headline", "--output", str(out), "--chunk_size", "2") == 0
    rows = read_csv(out)
    assert list(rows[0]) == ["id", "headline", "source", *PRED_COLUMNS]
    assert [r["id"] for r in rows] == [f"n{i}" for i in range(len(SENTENCES))] + ["n-empty"]
    assert all(r["source"] == 'wire, "quoted"\nsecond line' for r in rows[:-1])
    for row in rows[:-1]:
        check_row(row, expected[row["headline"]])
    assert rows[-1]["label"] == "" and rows[-1]["source"] == "blank"
    assert not [p for p in out.parent.iterdir() if p.name != "scored.csv"], "temp file left behind"


def test_csv_to_jsonl_and_label_column_collision(run_cli, tmp_path, expected):
    src = tmp_path / "labelled.csv"
    src.write_text("text,label\n" + "".join(f'"{t}",gold{i}\n' for i, t in enumerate(SENTENCES)), encoding="utf-8")
    out = tmp_path / "scored.jsonl"
    assert run_cli("--input", str(src), "--output", str(out)) == 0
    rows = read_jsonl(out)
    assert [r["label"] for r in rows] == [f"gold{i}" for i in range(len(SENTENCES))]
    for row in rows:
        assert row["pred_label"] == expected[row["text"]]["label"]
        assert row["pred_truncated"] is False


def test_jsonl_to_csv_and_jsonl(run_cli, tmp_path, expected):
    src = tmp_path / "news.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": i, "body": t, "meta": {"k": i}}) + "\n" + ("\n" if i == 1 else "")
            for i, t in enumerate(SENTENCES)
        ),
        encoding="utf-8",
    )
    out_csv, out_jsonl = tmp_path / "a.csv", tmp_path / "a.jsonl"
    assert run_cli("--input", str(src), "--text_column", "body", "--output", str(out_csv)) == 0
    assert run_cli("--input", str(src), "--text_column", "body", "--output", str(out_jsonl)) == 0
    rows = read_csv(out_csv)
    assert list(rows[0]) == ["id", "body", "meta", *PRED_COLUMNS]
    assert [r["id"] for r in rows] == [str(i) for i in range(len(SENTENCES))]
    records = read_jsonl(out_jsonl)
    assert [r["meta"] for r in records] == [{"k": i} for i in range(len(SENTENCES))]
    for row, rec in zip(rows, records):
        check_row(row, expected[row["body"]])
        check_row(rec, expected[rec["body"]])


def test_txt_input_skips_blank_lines(run_cli, tmp_path, expected):
    src = tmp_path / "lines.txt"
    src.write_text("\ufeff" + "\r\n".join([SENTENCES[0], "", "   ", *SENTENCES[1:]]) + "\r\n", encoding="utf-8")
    out = tmp_path / "lines.jsonl"
    assert run_cli("--input", str(src), "--output", str(out)) == 0
    rows = read_jsonl(out)
    assert [r["text"] for r in rows] == SENTENCES
    for row in rows:
        check_row(row, expected[row["text"]])


def test_csv_output_neutralises_formulas_in_the_input_cells(run_cli, tmp_path):
    """A CSV cell a spreadsheet would run as a formula (OWASP "CSV injection") gets a leading '; JSON Lines keeps it."""
    hyperlink = '=HYPERLINK("http://x")'
    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "extra"])
        w.writerow([hyperlink, "@SUM(A1)"])
        w.writerow([SENTENCES[0], "plain"])
    out_csv, out_jsonl = tmp_path / "out.csv", tmp_path / "out.jsonl"
    assert run_cli("--input", str(src), "--output", str(out_csv)) == 0
    assert run_cli("--input", str(src), "--output", str(out_jsonl)) == 0
    rows, records = read_csv(out_csv), read_jsonl(out_jsonl)
    assert list(rows[0]) == ["text", "extra", *PRED_COLUMNS]
    assert [(r["text"], r["extra"]) for r in rows] == [("'" + hyperlink, "'@SUM(A1)"), (SENTENCES[0], "plain")]
    assert [(r["text"], r["extra"]) for r in records] == [(hyperlink, "@SUM(A1)"), (SENTENCES[0], "plain")]
    for row, rec in zip(rows, records):  # the text as given was scored; the prediction columns are not touched
        check_row(row, rec)


def test_stdin_through_the_real_command(lora_run):
    proc = subprocess.run(
        [sys.executable, "-m", "finsent", "predict", "--model_dir", str(lora_run), "--quiet"],
        input="\n".join(SENTENCES[:3]) + "\n\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == SENTENCES[:3]
    assert all(r["label"] in ("negative", "neutral", "positive") for r in rows)


def many_texts(n: int) -> list[str]:
    """n distinct sentences of varied length, every 37th one empty."""
    words = "operating profit rose while net sales fell sharply in the third quarter".split()
    return ["" if i % 37 == 5 else f"Company {i} : " + " ".join(words[: 3 + i % 9]) + " ." for i in range(n)]


def test_overlapped_chunks_keep_input_order(shared_predictor, tmp_path):
    """300 rows in chunks of 7, read, scored and written at once: the rows in input order with the predictions of
    one plain Predictor.score call over the same texts."""
    texts = many_texts(300)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    source = predict.open_file(src)
    summary = finish_within(300, predict.run, shared_predictor, source, out, chunk_size=7, show_progress=False)
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == list(range(300)) and [r["text"] for r in rows] == texts
    scored = [t for t in texts if t]
    assert (summary.rows, summary.scored, summary.empty) == (300, len(scored), 300 - len(scored))
    for row, pred in zip([r for r in rows if r["text"]], shared_predictor.score(scored).records(), strict=True):
        check_row(row, pred)
    assert all(r["label"] is None for r in rows if not r["text"])
    assert pipeline_threads() == []


def test_a_bad_row_late_in_the_file_is_one_line_and_leaves_no_file(run_cli, tmp_path, capsys, monkeypatch):
    """The reading thread's error, after chunks were scored and written, reaches the CLI unchanged (exit 2)."""
    monkeypatch.chdir(tmp_path)
    lines = [json.dumps({"text": t}) for t in many_texts(100)]
    lines[83] = json.dumps({"body": "no text field"})
    (tmp_path / "late.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for output in ("scored.csv", "scored.jsonl"):
        assert finish_within(300, run_cli, "--input", "late.jsonl", "--output", output, "--chunk_size", "7") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == (
            "finsent: error: late.jsonl:84: no field 'text'; set --text_column to the field holding the sentence"
        ), err
    assert [p.name for p in tmp_path.iterdir()] == ["late.jsonl"], "output or temp file left behind"
    assert pipeline_threads() == []


def test_a_failing_write_stops_reading_and_scoring(shared_predictor, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in many_texts(300)), encoding="utf-8")
    source = predict.open_file(src)
    read = []
    source.rows = (read.append(row) or row for row in source.rows)

    class Counting:  # the real predictor, its calls counted
        labels = shared_predictor.labels
        calls = 0

        def score(self, texts):
            self.calls += 1
            return shared_predictor.score(texts)

    class FullDisk(io.StringIO):
        flushed = 0

        def flush(self):
            self.flushed += 1
            if self.flushed == 3:
                raise OSError(28, "No space left on device")

    counting, out = Counting(), FullDisk()
    with pytest.raises(OSError, match="No space left on device"):
        finish_within(300, predict.run, counting, source, None, chunk_size=7, show_progress=False, stdout=out)
    # chunk 3 failed; the engine stops at the next put (2 chunks queued, 1 scored): 6 of 43 chunks at most
    assert out.getvalue().count("\n") == 3 * 7 and counting.calls <= 6
    assert len(read) <= 7 * (6 + 3) and pipeline_threads() == []  # the reader stopped 3 chunks ahead at most


class StubPredictor:
    """Cheap stand-in that records the chunks it is asked to score."""

    labels = ("negative", "neutral", "positive")

    def __init__(self):
        self.calls = []

    def score(self, texts):
        self.calls.append(len(texts))
        probs = np.tile([0.2, 0.5, 0.3], (len(texts), 1))
        return Scores(probs, np.zeros(len(texts), dtype=bool), self.labels)


@pytest.mark.slow  # 60,000 rows under tracemalloc
def test_file_is_streamed_in_chunks(tmp_path):
    src = tmp_path / "big.csv"
    n = 60_000
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow(
                [i, f"Company {i} reported that quarterly net sales rose by {i % 97} percent on strong demand ."]
            )
    size = src.stat().st_size
    source = predict.open_file(src)
    assert inspect.isgenerator(source.rows)
    stub = StubPredictor()
    out = tmp_path / "big.jsonl"
    tracemalloc.start()  # up to 7 chunks at once: 3 read ahead, 1 scored, 3 written behind
    summary = predict.run(stub, source, out, chunk_size=100, show_progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert summary.rows == summary.scored == n
    assert stub.calls == [100] * (n // 100)
    assert peak < size / 4, f"peak traced memory {peak} bytes for a {size}-byte file: the file was loaded whole"
    with open(out, encoding="utf-8") as f:
        first, last = json.loads(next(f)), json.loads(list(f)[-1])
    assert first["id"] == "0" and last["id"] == str(n - 1)


def test_output_is_written_chunk_by_chunk(tmp_path):
    """Streamed: when chunk k is scored, all but the chunks waiting to be written (at most 3) are in the output."""
    src = tmp_path / "lines.txt"
    src.write_text("".join(f"sentence number {i}\n" for i in range(30)), encoding="utf-8")
    out = io.StringIO()
    seen = []

    class Spy(StubPredictor):
        def score(self, texts):
            seen.append(out.getvalue().count("\n"))
            return super().score(texts)

    predict.predict_rows(Spy(), predict.open_file(src), out, "jsonl", chunk_size=3)
    assert len(seen) == 10 and all(lines >= 3 * (k - 3) for k, lines in enumerate(seen)), seen
    assert [json.loads(line)["text"] for line in out.getvalue().splitlines()] == [
        f"sentence number {i}" for i in range(30)
    ]


def test_the_engine_waits_on_neither_reading_nor_writing():
    """Chunk 1 is scored while chunk 3 is read, and chunk 3 while chunk 1 is still being written (each wait would
    time out in a loop that reads, scores and writes in turn)."""
    third_read, third_scored = threading.Event(), threading.Event()

    def rows():
        for i in range(12):
            if i == 8:
                third_read.set()
            yield predict.Row({"text": f"s{i}"}, f"s{i}", f"row {i}")

    class Spy(StubPredictor):
        read_ahead = None

        def score(self, texts):
            if self.read_ahead is None:
                self.read_ahead = third_read.wait(10)
            result = super().score(texts)
            if len(self.calls) == 3:
                third_scored.set()
            return result

    class SlowOutput(io.StringIO):
        written_behind = None

        def flush(self):
            if self.written_behind is None:
                self.written_behind = third_scored.wait(10)

    spy, out = Spy(), SlowOutput()
    summary = predict.predict_rows(spy, predict.Source("test", ["text"], rows()), out, "jsonl", chunk_size=3)
    assert spy.read_ahead and out.written_behind
    assert [json.loads(line)["text"] for line in out.getvalue().splitlines()] == [f"s{i}" for i in range(12)]
    assert summary.rows == summary.scored == 12 and pipeline_threads() == []


def test_raw_csv_writes_the_input_cells_as_they_are(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text('text,=cmd,note\n"=1+1",+1,-0.5\nfine,\tx,@a\n', encoding="utf-8")
    tail = ["neutral", "0.5", "0.2", "0.5", "0.3", "False"]
    header = ["text", "=cmd", "note", *PRED_COLUMNS]
    cells = [["=1+1", "+1", "-0.5", *tail], ["fine", "\tx", "@a", *tail]]
    for raw in (False, True):
        out = tmp_path / f"raw_{raw}.csv"
        predict.run(StubPredictor(), predict.open_file(src), out, show_progress=False, raw_csv=raw)
        with open(out, newline="", encoding="utf-8") as f:
            got = list(csv.reader(f))
        if raw:
            assert got == [header, *cells]
        else:
            assert got[0] == ["text", "'=cmd", "note", *PRED_COLUMNS]
            assert got[1:] == [["'=1+1", "+1", "-0.5", *tail], ["fine", "'\tx", "'@a", *tail]]  # numbers stay


BAD_INPUTS = [
    ("missing.csv", None, [], "no such input file"),
    ("no_column.csv", "headline,source\nProfit rose,wire\n", [], "no column 'text'"),
    ("broken.jsonl", '{"text": "fine"}\n{"text": oops}\n', [], "broken.jsonl:2: invalid JSON"),
    ("number.jsonl", '{"text": 42}\n', [], "number.jsonl:1: field 'text' must be a string"),
    ("nofield.jsonl", '{"body": "x"}\n', [], "nofield.jsonl:1: no field 'text'"),
    ("surrogate.jsonl", '{"text": "bad \\ud800 escape"}\n', [], "surrogate.jsonl:1: field 'text' is not valid Unicode"),
    ("ragged.csv", 'text\n"a",b\n', [], "ragged.csv:2: 1 more cells"),
    ("latin1.txt", "Profit rose 5 \xa3\n".encode("latin-1"), [], "not UTF-8"),
    ("array.json", '["a"]', [], "JSON Lines"),
    ("empty.txt", "\n\n", [], "no sentences to score"),
    ("good.txt", "Profit rose\n", ["--output", "out.xlsx"], "expected a .csv or .jsonl"),
    ("good.csv", "text\nProfit rose\n", ["--output", "good.csv"], "is the input file"),
]


@pytest.mark.parametrize("name,content,extra,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, capsys, monkeypatch, name, content, extra, message):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    assert run_cli("--input", name, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("finsent: error: ") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_bad_model_and_arguments_exit_2(tmp_path, lora_run):
    cases = [
        (["--model_dir", str(tmp_path / "nope"), "Profit rose"], "no such run folder"),
        (["--model_dir", str(lora_run), "--backend", "onnx", "Profit rose"], "finsent export-onnx"),
        (["--model_dir", str(lora_run), "--input", "x.csv", "Profit rose"], "not both"),
    ]
    for argv, message in cases:
        proc = finsent_subprocess("predict", *argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("finsent: error: ") and message in last, proc.stderr
        assert "Traceback" not in proc.stderr
