"""finsent.tables: one reader of user tables for train/evaluate (data.load_data) and predict, local or by URL."""

import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finsent import predict, tables
from finsent.data import LABELS, load_data
from finsent.errors import FinsentError
from finsent.inference import Scores

ROWS = [
    ("Operating profit rose to EUR 13.1 mn .", "positive"),
    ("The company will cut 300 jobs .", "negative"),
    ("The meeting will be held on 15 April .", "neutral"),
    ("Net sales increased by 18.5 % .", "positive"),
]


class StubPredictor:
    labels = LABELS

    def score(self, texts):
        import numpy as np

        return Scores(np.tile([0.2, 0.5, 0.3], (len(texts), 1)), np.zeros(len(texts), dtype=bool), self.labels)


def write_table(path, fmt):
    records = [{"id": i, "text": t, "label": lab} for i, (t, lab) in enumerate(ROWS)]
    if fmt == "bom.csv":
        path.write_text(
            "\ufeffid,text,label\r\n" + "".join(f'{r["id"]},"{r["text"]}",{r["label"]}\r\n' for r in records),
            encoding="utf-8",
        )
    elif fmt == "tsv":
        path.write_text("id\ttext\tlabel\n" + "".join(f"{r['id']}\t{r['text']}\t{r['label']}\n" for r in records))
    elif fmt == "json":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


FORMATS = ["bom.csv", "tsv", "json", "jsonl", "parquet"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_train_reads_every_table_format(tmp_path, fmt):
    data = load_data(write_table(tmp_path / f"d.{fmt}", fmt))
    assert data.texts == [t for t, _ in ROWS]
    assert [LABELS[i] for i in data.labels] == [lab for _, lab in ROWS]
    assert data.source["format"] == "table"


@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_reads_every_table_format_with_its_columns(tmp_path, fmt):
    src = write_table(tmp_path / f"d.{fmt}", fmt)
    out = tmp_path / "out.jsonl"
    summary = predict.run(StubPredictor(), predict.open_file(src), out, chunk_size=3, show_progress=False)
    assert summary.rows == summary.scored == len(ROWS)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == [t for t, _ in ROWS]
    assert list(rows[0])[:3] == ["id", "text", "label"]  # no BOM glued to the first column name
    assert {r["pred_label"] for r in rows} == {"neutral"}


def test_urls_are_read_through_fsspec(tmp_path):
    with fsspec.open("memory://finsent-test/news.csv", "w", encoding="utf-8") as f:
        f.write("text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in ROWS))
    rows = tables.read_rows("memory://finsent-test/news.csv", ("text",))
    assert [r.fields["text"] for r in rows] == [t for t, _ in ROWS]
    assert rows[0].where == "memory://finsent-test/news.csv:2"
    local = write_table(tmp_path / "d.parquet", "parquet")
    assert [r.fields["label"] for r in tables.read_rows(local.as_uri())] == [lab for _, lab in ROWS]
    with pytest.raises(FinsentError, match="memory://finsent-test/nope.csv: no such file"):
        tables.open_table("memory://finsent-test/nope.csv")


def test_txt_is_one_sentence_a_line_and_unknown_suffixes_are_txt(tmp_path):
    src = tmp_path / "lines.log"
    src.write_text("\ufefffirst\r\n\r\n  \r\nsecond\n", encoding="utf-8")
    rows = tables.read_rows(src)
    assert [(r.fields, r.where) for r in rows] == [({"text": "first"}, f"{src}:1"), ({"text": "second"}, f"{src}:4")]


BAD = [
    ("ragged.tsv", b"text\tlabel\na\tpositive\textra\n", "ragged.tsv:2: 1 more cells"),
    ("latin1.csv", "text\nProfit \xa3\n".encode("latin-1"), "not UTF-8"),
    ("broken.json", b'[{"text": "a"},', "broken.json:1: invalid JSON"),
    ("strings.json", b'["a", "b"]', "strings.json:item 1: expected a JSON object, got str"),
    ("deep.jsonl", b"[" * 100_000 + b"\n", "deep.jsonl:1:"),
    ("bad.parquet", b"PAR1 not really", "not a readable Parquet file"),
    ("header.csv", b"headline\nx\n", "no column 'text' in the header ['headline']"),
]


@pytest.mark.parametrize("name,content,message", BAD, ids=[b[0] for b in BAD])
def test_bad_tables_name_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(FinsentError, match=message.replace("[", r"\[").replace("(", r"\(")):
        tables.read_rows(tmp_path / name, ("text",))


def test_parquet_is_streamed_in_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "PARQUET_BATCH_ROWS", 2)
    src = write_table(tmp_path / "d.parquet", "parquet")
    with tables.open_table(src) as table:
        assert table.columns == ["id", "text", "label"]
        first = next(table.rows)
        assert first.where == f"{src}:row 1" and first.fields["id"] == 0
        assert [r.where for r in table.rows] == [f"{src}:row {i}" for i in range(2, len(ROWS) + 1)]
