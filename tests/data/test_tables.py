"""finsent.tables: one reader of user tables for train/evaluate (data.load_data) and predict, local or by URL."""

import bz2
import gzip
import json
import lzma

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finsent.apps import predict
from finsent.core.errors import FinsentError
from finsent.data import tables
from finsent.data.corpus import load_data
from finsent.data.labels import LABELS
from finsent.inference.predictor import Scores

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


def zstd_compress(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as f:
        f.write(data)
    return sink.getvalue().to_pybytes()


COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress, ".zst": zstd_compress}


@pytest.mark.parametrize("suffix", COMPRESSORS)
@pytest.mark.parametrize("fmt", ["bom.csv", "jsonl", "parquet"])
def test_compressed_tables_read_as_the_plain_ones(tmp_path, fmt, suffix):
    plain = write_table(tmp_path / f"d.{fmt}", fmt)
    packed = tmp_path / f"d.{fmt}{suffix}"
    packed.write_bytes(COMPRESSORS[suffix](plain.read_bytes()))
    assert tables.table_format(packed) == tables.table_format(plain)
    assert tables.base_name(packed) == str(plain.with_suffix(""))
    rows = tables.read_rows(packed, ("text",))
    assert [r.fields for r in rows] == [r.fields for r in tables.read_rows(plain)]
    assert rows[0].where.startswith(f"{packed}:")
    assert pa.concat_tables(tables.read_chunks(packed, ("text",), chunk_rows=3)).equals(
        pa.concat_tables(tables.read_chunks(plain, ("text",), chunk_rows=3))
    )
    assert load_data(packed).texts == [t for t, _ in ROWS]  # training reads it too


def test_a_damaged_compressed_file_is_one_line(tmp_path):
    src = tmp_path / "d.csv.gz"
    packed = gzip.compress(("text\n" + "".join(f"Profit rose {i} %.\n" for i in range(5000))).encode())
    src.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(FinsentError, match=r"d\.csv\.gz: not a readable gzip file \(Compressed file ended"):
        tables.read_rows(src)


def test_read_chunks_keeps_csv_cells_as_strings_by_the_row_readers_rules(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text('id,text,note\n007,"Profit rose,\nsharply",x\n8,Sales fell\n9,,\n', encoding="utf-8")
    chunks = list(tables.read_chunks(src, ("text",), chunk_rows=2))
    assert [c.num_rows for c in chunks] == [2, 1]
    table = pa.concat_tables(chunks)
    assert table.schema == pa.schema([("id", pa.string()), ("text", pa.string()), ("note", pa.string())])
    assert table.to_pylist() == [
        {"id": "007", "text": "Profit rose,\nsharply", "note": "x"},  # a quoted line break stays in its cell
        {"id": "8", "text": "Sales fell", "note": None},  # a short row is padded with nulls
        {"id": "9", "text": "", "note": ""},
    ]
    (header_only,) = tables.read_chunks(write_header(tmp_path / "h.tsv"), ("text",), chunk_rows=2)
    assert header_only.num_rows == 0 and header_only.column_names == ["id", "text"]


def write_header(path):
    path.write_text("id\ttext\n", encoding="utf-8")
    return path


def test_read_chunks_regroups_parquet_row_groups_and_keeps_types(tmp_path):
    src = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": list(range(10)), "text": [f"t{i}" for i in range(10)]}), src, row_group_size=3)
    chunks = list(tables.read_chunks(src, ("text",), chunk_rows=4))
    assert [c.num_rows for c in chunks] == [4, 4, 2]
    assert pa.concat_tables(chunks).column("id").to_pylist() == list(range(10))
    assert chunks[0].schema.field("id").type == pa.int64()


def test_read_chunks_types_json_records_by_the_first_chunk(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text('{"id": 1, "text": "a"}\n{"text": "b"}\n{"id": 3, "text": "c", "x": 1.5}\n', encoding="utf-8")
    (table,) = tables.read_chunks(src, ("text",), chunk_rows=3)
    assert table.column_names == ["id", "text", "x"] and table.column("id").to_pylist() == [1, None, 3]
    assert table.schema.field("x").type == pa.float64()
    with pytest.raises(FinsentError, match=r"d\.jsonl: field 'id' does not fit the type int64 .* from .*d\.jsonl:3 on"):
        list(tables.read_chunks(write_lines(src, ['{"id": "x"}']), (), chunk_rows=2))
    with pytest.raises(FinsentError, match=r"d\.jsonl:3: field 'y' is not in the first records \['id', 'text'\]"):
        list(tables.read_chunks(write_lines(src, ['{"id": 3, "y": 1}']), (), chunk_rows=2))
    with pytest.raises(FinsentError, match=r"d\.jsonl: no column 'body' in the fields of the first records"):
        list(tables.read_chunks(src, ("body",), chunk_rows=2))
    src.write_text("\n", encoding="utf-8")
    with pytest.raises(FinsentError, match=r"d\.jsonl: empty file"):
        list(tables.read_chunks(src, ("text",)))


def write_lines(path, extra):
    path.write_text(
        '{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n' + "".join(e + "\n" for e in extra), encoding="utf-8"
    )
    return path
