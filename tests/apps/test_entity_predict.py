"""`finsent predict` with an entity-level run (issue 23): given (text, entity) pairs, watchlist matches (one row per
entity found, unmatched rows kept and counted), order and chunks, and the one-line errors (exit 2)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import finsent_subprocess
from finsent.apps import cli
from finsent.apps.cli import main
from finsent.data.entities import CLOSE, OPEN, EntityFormat, entity_input
from finsent.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]
LABELS = ("negative", "neutral", "positive")
PRED_COLUMNS = ["label", "confidence", *[f"prob_{k}" for k in LABELS], "truncated"]
WATCHLIST = "name,aliases,ticker\nTesla,Tesla Inc,TSLA\nFord Motor,Ford,F\nAlphabet,Google,GOOGL\n"
HEADLINES = [
    "Tesla shares jump as Ford cuts guidance",
    "Markets were quiet ahead of the holiday",
    "$TSLA rallies; Google and Ford lag, Fordham too",
    "",
    "Ford recalls 10,000 trucks, FORD stock falls",
    "Fordham University endowment sells its Teslas",
]
# (row, entity, mention, start, end, spans) that the watchlist finds in HEADLINES, in output order
FOUND = [
    (0, "Tesla", "Tesla", 0, 5, [(0, 5)]),
    (0, "Ford Motor", "Ford", 21, 25, [(21, 25)]),
    (2, "Tesla", "$TSLA", 0, 5, [(0, 5)]),
    (2, "Alphabet", "Google", 15, 21, [(15, 21)]),
    (2, "Ford Motor", "Ford", 26, 30, [(26, 30)]),
    (4, "Ford Motor", "Ford", 0, 4, [(0, 4), (28, 32)]),
]


class Recording:
    """The real entity predictor, recording the strings and chunk sizes it is asked to score."""

    def __init__(self, predictor: Predictor):
        self.predictor, self.calls = predictor, []
        self.labels, self.info, self.backend_name = predictor.labels, predictor.info, predictor.backend_name

    def score(self, texts):
        self.calls.append(list(texts))
        return self.predictor.score(texts)


@pytest.fixture(scope="module")
def entity_predictor(entity_run):
    return Predictor(entity_run, "torch")


@pytest.fixture(scope="module")
def fmt(entity_predictor):
    return EntityFormat.from_json(entity_predictor.info.entity_input)


@pytest.fixture
def recording(entity_predictor, monkeypatch):
    rec = Recording(entity_predictor)
    monkeypatch.setattr(cli.serving, "predictor_for", lambda args, model_dir=None: rec)
    return rec


@pytest.fixture
def run_cli(recording, entity_run):
    def run(*argv):
        return main(["predict", "--model_dir", str(entity_run), "--quiet", *argv])

    return run


@pytest.fixture
def watchlist(tmp_path):
    path = tmp_path / "watchlist.csv"
    path.write_text(WATCHLIST, encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def expected(predictor, texts: list[str], entities: list[str], spans=None) -> list[dict]:
    fmt = EntityFormat.from_json(predictor.info.entity_input)
    spans = spans if spans is not None else [None] * len(texts)
    return predictor.score([entity_input(t, e, fmt, s) for t, e, s in zip(texts, entities, spans)]).records()


def check_pred(row: dict, pred: dict) -> None:
    assert row["label"] == pred["label"]
    # both rounded to 6 decimals, maybe scored in other batches (other padding, another order of float sums)
    assert float(row["confidence"]) == pytest.approx(pred["confidence"], abs=1e-5)
    for label in LABELS:
        assert float(row[f"prob_{label}"]) == pytest.approx(pred["probabilities"][label], abs=1e-5)


def check_empty(row: dict, columns=PRED_COLUMNS) -> None:
    assert all(row[c] in (None, "") for c in columns), row


def test_given_pairs_from_a_csv_column(run_cli, recording, entity_predictor, fmt, tmp_path, capsys):
    two_sided = HEADLINES[0]
    rows = [
        ["1", two_sided, "Tesla"],
        ["2", two_sided, "Ford"],
        ["3", HEADLINES[1], "Apple"],  # not mentioned: the entity is put in front of the text
        ["4", "", "Tesla"],
        ["5", HEADLINES[4], "  "],
    ]
    src = write_csv(tmp_path / "pairs.csv", ["id", "text", "company"], rows)
    out = tmp_path / "out.csv"
    assert run_cli("--input", str(src), "--entity_column", "company", "--output", str(out)) == 0
    got = read_csv(out)
    assert list(got[0]) == ["id", "text", "company", "entity", *PRED_COLUMNS]
    assert [(r["id"], r["entity"]) for r in got] == [
        ("1", "Tesla"),
        ("2", "Ford"),
        ("3", "Apple"),
        ("4", "Tesla"),
        ("5", ""),
    ]
    scored = [entity_input(t, e, fmt) for _, t, e in rows[:3]]
    assert [t for call in recording.calls for t in call] == scored  # the pairs, as entity_input builds them
    if fmt.style == "markers":
        assert scored[0] == f"{OPEN}Tesla{CLOSE} shares jump as Ford cuts guidance"
        assert scored[2] == f"{OPEN}Apple{CLOSE} | {HEADLINES[1]}"
    for row, pred in zip(got, expected(entity_predictor, [r[1] for r in rows[:3]], [r[2] for r in rows[:3]])):
        check_pred(row, pred)
    check_empty(got[3])
    check_empty(got[4])
    err = capsys.readouterr().err.strip().splitlines()
    assert f"scored 3 of 5 (text, entity) rows from 5 input rows with {entity_predictor.info.version}" in err[0]
    assert any("1 rows had an empty 'text'" in line for line in err), err
    assert any("1 rows had an empty 'company'; kept once each with empty predictions" in line for line in err), err


def test_entity_lists_in_jsonl_give_a_row_each_in_order(run_cli, entity_predictor, tmp_path, capsys):
    records = [
        {"id": 1, "text": HEADLINES[0], "entity": ["Ford", "Tesla", "Ford"]},
        {"id": 2, "text": HEADLINES[2], "entity": "Google"},
        {"id": 3, "text": HEADLINES[1], "entity": None},
        {"id": 4, "text": HEADLINES[0], "entity": "Tesla|Ford"},  # several in one string, as score reads them
    ]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert run_cli("--input", str(src), "--entity_column", "entity") == 0
    got = read_jsonl(capsys.readouterr().out)
    assert [(r["id"], r["entity"]) for r in got] == [
        (1, "Ford"),
        (1, "Tesla"),
        (2, "Google"),
        (3, None),
        (4, "Tesla"),
        (4, "Ford"),
    ]
    texts, names = [HEADLINES[0], HEADLINES[0], HEADLINES[2]], ["Ford", "Tesla", "Google"]
    want = expected(entity_predictor, texts + [HEADLINES[0]] * 2, names + ["Tesla", "Ford"])
    for row, pred in zip(got[:3] + got[4:], want):
        assert row["label"] == pred["label"] and row["truncated"] is False
        assert row["confidence"] == pytest.approx(pred["confidence"], abs=1e-5)
    check_empty(got[3])


def test_watchlist_gives_a_row_per_entity_found_and_keeps_unmatched_rows(
    run_cli, recording, entity_predictor, fmt, watchlist, tmp_path, capsys
):
    src = write_csv(tmp_path / "news.csv", ["id", "text"], [[str(i), t] for i, t in enumerate(HEADLINES)])
    out = tmp_path / "out.jsonl"
    assert run_cli("--input", str(src), "--entities", str(watchlist), "--output", str(out), "--chunk_size", "2") == 0
    got = read_jsonl(out.read_text(encoding="utf-8"))
    # rows 0, 2, 4 by entity found; 1 and 5 name none and 3 is empty: one row each, in input order
    assert [(r["id"], r["entity"], r["mention"], r["start"], r["end"]) for r in got] == [
        ("0", "Tesla", "Tesla", 0, 5),
        ("0", "Ford Motor", "Ford", 21, 25),
        ("1", None, None, None, None),
        ("2", "Tesla", "$TSLA", 0, 5),
        ("2", "Alphabet", "Google", 15, 21),
        ("2", "Ford Motor", "Ford", 26, 30),
        ("3", None, None, None, None),
        ("4", "Ford Motor", "Ford", 0, 4),
        ("5", None, None, None, None),
    ]
    for r in got:
        if r["entity"] is not None:
            assert r["text"][r["start"] : r["end"]] == r["mention"]
    texts, entities, spans = [HEADLINES[f[0]] for f in FOUND], [f[1] for f in FOUND], [f[5] for f in FOUND]
    scored = [t for call in recording.calls for t in call]
    assert scored == [entity_input(t, e, fmt, s) for t, e, s in zip(texts, entities, spans)]
    assert all(len(call) <= 2 for call in recording.calls)  # --chunk_size 2 rows at a time
    if fmt.style == "markers":  # every mention marked, not only the first
        assert scored[-1] == f"{OPEN}Ford{CLOSE} recalls 10,000 trucks, {OPEN}FORD{CLOSE} stock falls"
    preds = [r for r in got if r["entity"] is not None]
    for row, pred in zip(preds, expected(entity_predictor, texts, entities, spans)):
        check_pred(row, pred)
    for row in got:
        if row["entity"] is None:
            check_empty(row)
    err = capsys.readouterr().err.strip().splitlines()
    unmatched = [line for line in err if "named no entity" in line]
    assert unmatched == [
        f"finsent: note: 2 rows named no entity of the watchlist {watchlist}; kept once each with empty predictions"
    ]
    assert any("1 rows had an empty 'text'" in line for line in err), err


def test_watchlist_on_positional_sentences(run_cli, watchlist, capsys):
    assert run_cli("--entities", str(watchlist), HEADLINES[0], HEADLINES[1]) == 0
    got = read_jsonl(capsys.readouterr().out)
    assert [(r["text"], r["entity"], r["mention"]) for r in got] == [
        (HEADLINES[0], "Tesla", "Tesla"),
        (HEADLINES[0], "Ford Motor", "Ford"),
        (HEADLINES[1], None, None),
    ]
    assert got[0]["label"] in LABELS and got[2]["label"] is None


def test_stdin_with_a_watchlist_through_the_real_command(entity_run, entity_predictor, watchlist):
    proc = subprocess.run(
        [sys.executable, "-m", "finsent", "predict", "--model_dir", str(entity_run), "--entities", str(watchlist)],
        input="\n".join(HEADLINES[:3]) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = read_jsonl(proc.stdout)
    found = [f for f in FOUND if f[0] <= 2]
    assert [(r["text"], r["entity"]) for r in got if r["entity"]] == [(HEADLINES[f[0]], f[1]) for f in found]
    want = expected(entity_predictor, [HEADLINES[f[0]] for f in found], [f[1] for f in found], [f[5] for f in found])
    assert [r["label"] for r in got if r["entity"]] == [p["label"] for p in want]
    assert "1 rows named no entity of the watchlist" in proc.stderr


def bad_cases(tmp, entity_run, lora_run, watchlist) -> list[tuple[list[str], str]]:
    pairs = write_csv(tmp / "pairs.csv", ["text", "entity"], [[HEADLINES[0], "Tesla"]])
    jsonl = tmp / "pairs.jsonl"
    jsonl.write_text(json.dumps({"text": HEADLINES[0], "company": "Tesla"}) + "\n", encoding="utf-8")
    clash = write_csv(tmp / "clash.csv", ["text", "mention"], [[HEADLINES[0], "x"]])
    no_name = tmp / "companies.csv"
    no_name.write_text("company,ticker\nTesla,TSLA\n", encoding="utf-8")
    e, s = str(entity_run), str(lora_run)
    return [
        (
            ["--model_dir", s, "--entities", str(watchlist), "Tesla jumps"],
            "a sentence-level run, but finsent predict --entities needs an entity-level run",
        ),
        (
            ["--model_dir", s, "--input", str(pairs), "--entity_column", "entity"],
            "a sentence-level run, but finsent predict --entity_column needs",
        ),
        (
            ["--model_dir", e, "Tesla jumps"],
            "an entity-level run, but finsent predict without --entity_column or --entities needs a sentence-level run",
        ),
        (["--model_dir", e, "--input", str(pairs)], "give it entities (--entity_column or --entities)"),
        (
            ["--model_dir", e, "--input", str(pairs), "--entities", str(no_name)],
            f"{no_name}: no column 'name' in the header",
        ),
        (
            ["--model_dir", e, "--input", str(pairs), "--entity_column", "company"],
            f"{pairs}: no column 'company' in the header",
        ),
        (["--model_dir", e, "--input", str(jsonl), "--entity_column", "ticker"], f"{jsonl}:1: no field 'ticker'"),
        (
            ["--model_dir", e, "--input", str(pairs), "--entity_column", "entity", "--entities", str(watchlist)],
            "pass one of them",
        ),
        (["--model_dir", e, "--entity_column", "entity", "Tesla jumps"], "--entity_column entity: needs --input"),
        (["--model_dir", e, "--input", str(clash), "--entities", str(watchlist)], "has a column 'mention'"),
        (["--model_dir", e, "--cascade", s, "--entities", str(watchlist), "x"], f"{s}: a sentence-level run"),
    ]


def test_mistakes_are_one_line_and_exit_2(entity_run, lora_run, watchlist, tmp_path):
    for argv, message in bad_cases(tmp_path, entity_run, lora_run, watchlist):
        proc = finsent_subprocess("predict", "--quiet", *argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("finsent: error: ") and message in lines[0], (argv, proc.stderr)
        assert not proc.stdout
