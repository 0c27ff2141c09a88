"""`finsent score` with an entity run: one Parquet row per (input row, entity) from an entity column or a watchlist,
the daily per-entity table checked against those rows, its HTML report, and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from finsent.apps.entity_daily import daily_table, utc_days
from finsent.apps.entity_shards import entity_names
from finsent.apps.shards import ScoreConfig
from finsent.core.errors import FinsentError
from finsent.data.entities import EntityFormat, entity_input
from finsent.data.watchlist import read_watchlist, split_entities, watchlist_pairs
from finsent.runs.folder import read_model_info

LABELS = ["negative", "neutral", "positive"]
ROWS = [  # id, text, date, the entities named in the company column
    (0, "Tesla shares jump as Ford cuts guidance", "2024-03-01", "Tesla|Ford"),
    (1, "$TSLA slides after Tesla Inc recall", "2024-03-01", "Tesla"),
    (2, "Ford Motor beats estimates", "2024-03-02T15:30:00Z", "Ford"),
    (3, "Apple unveils a new iPhone; $AAPL flat", "2024-03-02", "Apple"),
    (4, "Markets were quiet on Monday", "2024-03-03", ""),
    (5, "", "2024-03-03", "Tesla"),
    (6, "Fordham University opens a campus", "2024-03-03", "Ford"),
    (7, "Tesla and Apple lead gains", "not a date", "Tesla|Apple"),
    (8, "Tesla rallies again", "2024-03-03 23:30:00-05:00", "Tesla"),
]
DAYS = {0: "2024-03-01", 1: "2024-03-01", 2: "2024-03-02", 3: "2024-03-02", 8: "2024-03-04"}  # UTC days
FOUND = {  # id -> (entity, mention, start) found by the watchlist, in order
    0: [("Tesla", "Tesla", 0), ("Ford", "Ford", 21)],
    1: [("Tesla", "$TSLA", 0)],
    2: [("Ford", "Ford Motor", 0)],
    3: [("Apple", "Apple", 0)],
    7: [("Tesla", "Tesla", 0), ("Apple", "Apple", 10)],
    8: [("Tesla", "Tesla", 0)],
}


def write_inputs(folder: Path) -> Path:
    """The rows over a CSV and a JSONL shard, and a watchlist beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(ROWS, columns=["id", "text", "date", "company"])
    (folder / "in").mkdir()
    frame.iloc[:5].to_csv(folder / "in" / "part-0.csv", index=False)
    frame.iloc[5:].to_json(folder / "in" / "part-1.jsonl", orient="records", lines=True, force_ascii=False)
    (folder / "watchlist.csv").write_text("name,aliases,ticker\nTesla,Tesla Inc,TSLA\nFord,Ford Motor,\nApple,,AAPL\n")
    return folder


def score_cli(*args: str) -> int:
    from finsent.apps.cli import main

    return main(["score", "--quiet", "--threads", "1", "--chunk_size", "3", *args])


def output_frame(out: Path) -> pd.DataFrame:
    frames = [pq.read_table(p).to_pandas() for p in sorted(out.glob("part-*.parquet"))]
    frame = pd.concat(frames, ignore_index=True)
    frame["id"] = pd.to_numeric(frame["id"])  # CSV ids are strings, JSONL ids numbers
    return frame


def cells(values) -> tuple:
    """A row's values with pandas' missing values as None and whole floats as ints (a column with nulls is float)."""
    return tuple(None if pd.isna(v) else int(v) if isinstance(v, float) else v for v in values)


# --- fast: no model ---------------------------------------------------------------------------------------------


def test_entity_cells_names_and_days():
    assert split_entities(None) == [] and split_entities("Tesla|Ford") == ["Tesla", "Ford"]
    assert split_entities(["Tesla", None, "Ford"]) == ["Tesla", "Ford"]
    assert entity_names(["id", "text"], None) == ["entity", "mention", "start", "end"]
    assert entity_names(["id", "entity"], "entity") == ["entity", "mention", "start", "end"]
    assert entity_names(["id", "start", "company"], "company") == [
        "pred_entity",
        "pred_mention",
        "pred_start",
        "pred_end",
    ]
    days = utc_days(pd.Series(["2024-03-01", "2024-03-01T23:30:00-05:00", "soon", None]))
    assert days.tolist() == ["2024-03-01", "2024-03-02", None, None]


def test_daily_table_of_a_few_pairs():
    pairs = pd.DataFrame(
        {
            "date": ["2024-03-01", "2024-03-01 10:00", "2024-03-02", "2024-03-01", "n/a"],
            "entity": ["Tesla", "Tesla", "Tesla", "Ford", "Ford"],
            "label": ["positive", "negative", "neutral", "negative", "positive"],
            "score": [0.8, -0.4, 0.1, -0.9, 0.5],
        }
    )
    table, undated = daily_table(pairs, LABELS, "date")
    assert undated == 1
    assert table.to_dict(orient="records") == [
        {
            "date": "2024-03-01",
            "entity": "Ford",
            "mentions": 1,
            "mean_score": -0.9,
            "negative": 1,
            "neutral": 0,
            "positive": 0,
        },
        {
            "date": "2024-03-01",
            "entity": "Tesla",
            "mentions": 2,
            "mean_score": 0.2,
            "negative": 1,
            "neutral": 0,
            "positive": 1,
        },
        {
            "date": "2024-03-02",
            "entity": "Tesla",
            "mentions": 1,
            "mean_score": 0.1,
            "negative": 0,
            "neutral": 1,
            "positive": 0,
        },
    ]
    with pytest.raises(FinsentError, match="--date_column date: no value reads as a date"):
        daily_table(pairs.assign(date="someday"), LABELS, "date")


def test_bad_flag_combinations_are_one_line():
    with pytest.raises(FinsentError, match="--entity_column .* or --entities WATCHLIST, not both"):
        ScoreConfig("m", "i", "o", entity_column="company", entities="w.csv")
    with pytest.raises(FinsentError, match="--date_column needs an entity run"):
        ScoreConfig("m", "i", "o", date_column="date")


# --- slow: the real entity run ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def watched(entity_run, tmp_path_factory) -> Path:
    """The inputs scored with the watchlist and a date column: the job's folder."""
    root = write_inputs(tmp_path_factory.mktemp("entity-score"))
    args = ["--model_dir", str(entity_run), "--input", str(root / "in"), "--output", str(root / "out")]
    assert score_cli(*args, "--entities", str(root / "watchlist.csv"), "--date_column", "date") == 0
    return root


@pytest.mark.slow
def test_watchlist_gives_one_row_per_entity_found(watched, entity_run):
    from finsent.inference.predictor import Predictor

    out = output_frame(watched / "out")
    got = {i: [cells(t) for t in zip(g["entity"], g["mention"], g["start"])] for i, g in out.groupby("id", sort=True)}
    for i, _, _, _ in ROWS:
        assert got[i] == (FOUND.get(i) or [(None, None, None)]), i  # no text or no entity: one empty row
    assert out["id"].tolist() == sorted(out["id"])  # input order kept
    assert list(out.columns) == [
        "id",
        "text",
        "date",
        "company",
        "entity",
        "mention",
        "start",
        "end",
        "label",
        "confidence",
        *[f"prob_{x}" for x in LABELS],
        "truncated",
    ]
    scored = out[out["entity"].notna()]
    assert all(
        t[int(s) : int(e)] == m for t, s, e, m in zip(scored["text"], scored["start"], scored["end"], scored["mention"])
    )
    assert out[out["entity"].isna()]["label"].isna().all() and scored["label"].notna().all()
    fmt = EntityFormat.from_json(read_model_info(entity_run).entity_input)
    watchlist = read_watchlist(watched / "watchlist.csv")
    inputs = [
        entity_input(p.text, p.entity, fmt, p.spans)
        for i, text, _, _ in ROWS
        for p in watchlist_pairs(i, text, watchlist)
    ]
    want = Predictor(entity_run, num_threads=1).score(inputs)
    assert scored["label"].tolist() == [p["label"] for p in want.records()]
    assert scored["prob_positive"].tolist() == pytest.approx(want.probs[:, LABELS.index("positive")].tolist(), abs=1e-5)
    summary = json.loads((watched / "out" / "_summary.json").read_text())
    assert summary["task"] == "entity" and summary["rows"] == len(out) and summary["scored"] == len(scored)


@pytest.mark.slow
def test_daily_table_matches_the_parquet_rows(watched):
    out = output_frame(watched / "out")
    pairs = out[out["entity"].notna()].copy()
    pairs["day"] = pairs["id"].map(DAYS)
    undated = int(pairs["day"].isna().sum())
    pairs = pairs[pairs["day"].notna()]
    pairs["score"] = pairs["prob_positive"] - pairs["prob_negative"]
    daily = pd.read_csv(watched / "out" / "_entity_daily.csv")
    assert list(daily.columns) == ["date", "entity", "mentions", "mean_score", *LABELS]
    assert len(daily) == pairs.groupby(["day", "entity"]).ngroups == 5
    for row in daily.itertuples(index=False):
        group = pairs[(pairs["day"] == row.date) & (pairs["entity"] == row.entity)]
        assert row.mentions == len(group) and row.mean_score == pytest.approx(group["score"].mean(), abs=1e-6)
        for label in LABELS:
            assert getattr(row, label) == int((group["label"] == label).sum()), (row.date, row.entity, label)
    pd.testing.assert_frame_equal(pd.read_parquet(watched / "out" / "_entity_daily.parquet"), daily, check_dtype=False)
    summary = json.loads((watched / "out" / "_summary.json").read_text())
    assert summary["entity_daily"]["undated"] == undated == 2 and summary["entity_daily"]["rows"] == 5


@pytest.mark.slow
def test_html_report_draws_each_entitys_days(watched):
    page = (watched / "out" / "_entity_report.html").read_text(encoding="utf-8")
    daily = pd.read_csv(watched / "out" / "_entity_daily.csv")
    assert "<script src=" not in page and "plotly" in page.lower()  # self-contained: plotly.js inlined
    data = page.split('<script type="application/json" id="entity-daily">', 1)[1].split("</script>", 1)[0]
    pd.testing.assert_frame_equal(pd.DataFrame(json.loads(data)), daily, check_dtype=False)
    sections = [s.split("</section>", 1)[0] for s in page.split('<section class="entity" id="')[1:]]
    charted = {s.split('data-entity="', 1)[1].split('"', 1)[0]: s for s in sections}
    assert set(charted) == {"Tesla", "Ford", "Apple"}
    for entity, rows in daily.groupby("entity"):
        chart = charted[entity]
        assert '"mean score"' in chart and '"mentions"' in chart and "Plotly.newPlot" in chart
        days = json.dumps(rows["date"].tolist(), separators=(",", ":"))
        assert chart.count(f'"x":{days}') == 2  # the bars and the line: the entity's days, and only those
        assert '"y":' + json.dumps(rows["mentions"].tolist(), separators=(",", ":")) in chart  # its bars


@pytest.mark.slow
def test_a_rerun_skips_the_shards_and_writes_the_same_table(watched, entity_run, capsys):
    before = (watched / "out" / "_entity_daily.csv").read_text()
    args = ["--model_dir", str(entity_run), "--input", str(watched / "in"), "--output", str(watched / "out")]
    assert score_cli(*args, "--entities", str(watched / "watchlist.csv"), "--date_column", "date") == 0
    summary = json.loads((watched / "out" / "_summary.json").read_text())
    assert summary["shards_scored_this_run"] == 0 and (watched / "out" / "_entity_daily.csv").read_text() == before
    assert "daily sentiment of 3 entities (5 entity-days)" in capsys.readouterr().err


@pytest.mark.slow
def test_an_entity_column_names_the_pairs(entity_run, tmp_path):
    root = write_inputs(tmp_path)
    args = ["--model_dir", str(entity_run), "--input", str(root / "in"), "--output", str(root / "out")]
    assert score_cli(*args, "--entity_column", "company") == 0
    out = output_frame(root / "out")
    got = {i: [cells([e])[0] for e in g["entity"]] for i, g in out.groupby("id", sort=True)}
    assert got[0] == ["Tesla", "Ford"] and got[7] == ["Tesla", "Apple"] and got[4] == [None] and got[5] == [None]
    fordham = out[out["id"] == 6].iloc[0]  # named by the column but not in the text: scored, no mention
    assert fordham["entity"] == "Ford" and pd.isna(fordham["mention"]) and pd.isna(fordham["start"])
    assert fordham["label"] in LABELS
    assert "company" in out.columns and not (root / "out" / "_entity_daily.csv").exists()


@pytest.mark.slow
def test_one_line_errors(entity_run, lora_run, tmp_path, capsys):
    root = write_inputs(tmp_path)
    (root / "no_name.csv").write_text("company,ticker\nTesla,TSLA\n")
    cases = [
        (
            lora_run,
            ["--entities", str(root / "watchlist.csv")],
            "a sentence-level run, but finsent score --entity_column/--entities needs an entity-level run",
        ),
        (entity_run, [], "an entity-level run, but finsent score needs a sentence-level run; give it entities"),
        (
            entity_run,
            ["--entity_column", "ticker"],
            "no column 'ticker' among ['id', 'text', 'date', 'company']; set --entity_column",
        ),
        (entity_run, ["--entities", str(root / "watchlist.csv"), "--date_column", "day"], "no column 'day'"),
        (entity_run, ["--entities", str(root / "no_name.csv")], "name"),
    ]
    for k, (run, flags, message) in enumerate(cases):
        args = ["--model_dir", str(run), "--input", str(root / "in"), "--output", str(root / f"out{k}")]
        assert score_cli(*args, *flags) == 2, flags
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


@pytest.mark.slow
def test_ray_engine_gives_the_local_engines_entity_rows(watched, entity_run, tmp_path):
    args = ["--model_dir", str(entity_run), "--input", str(watched / "in"), "--output", str(tmp_path / "out")]
    flags = ["--entities", str(watched / "watchlist.csv"), "--date_column", "date"]
    assert score_cli(*args, *flags, "--engine", "ray", "--num_workers", "2") == 0
    for name in ("part-0.parquet", "part-1.parquet"):
        assert pq.read_table(tmp_path / "out" / name).equals(pq.read_table(watched / "out" / name)), name
    assert (tmp_path / "out" / "_entity_daily.csv").read_text() == (watched / "out" / "_entity_daily.csv").read_text()
