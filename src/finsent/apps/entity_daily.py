"""`finsent score --date_column` with an entity run: the daily per-entity table beside the Parquet output (date, entity,
mentions, mean score = mean P(positive) - P(negative), label counts) as CSV and Parquet, and its HTML report.

The table is built from the published shard outputs, so the shards done by an earlier run count too. A day is the
UTC calendar day of the row's date; a row whose date cannot be read is left out and counted.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from finsent.core.errors import FinsentError
from finsent.core.remote import is_local, storage_errors
from finsent.core.serialization import neutralise_cell

DAILY = "_entity_daily"  # .csv and .parquet
REPORT = "_entity_report.html"


def _positions(names: list[str], labels) -> dict[str, str]:
    """The entity, label and probability columns of a shard output, found from the end (the prediction columns come
    last, entity, mention, start and end just before them), whatever prefix they carry."""
    at = len(names) - len(labels) - 3
    return {"entity": names[at - 4], "label": names[at], **{label: names[at + 2 + j] for j, label in enumerate(labels)}}


def read_pairs(fs, paths: list[str], date_column: str, labels) -> pd.DataFrame:
    """date, entity, label and P(positive) - P(negative) of every scored pair in the outputs."""
    import pyarrow.parquet as pq

    frames = []
    for path in paths:
        with storage_errors(f"--output {path}"), fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            cols = _positions(parquet.schema_arrow.names, labels)
            read = [date_column, cols["entity"], cols["label"], cols["positive"], cols["negative"]]
            table = parquet.read(columns=read)
        pos, neg = (table.column(i).to_numpy(zero_copy_only=False) for i in (3, 4))
        frames.append(
            pd.DataFrame(
                {
                    "date": table.column(0).to_pandas(),
                    "entity": table.column(1).to_pylist(),
                    "label": table.column(2).to_pylist(),
                    "score": pos - neg,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    return frame[frame["entity"].notna() & frame["label"].notna()].reset_index(drop=True)


def utc_days(values: pd.Series) -> pd.Series:
    """Each value's UTC calendar day as YYYY-MM-DD; None where it is not a date."""
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    return parsed.dt.strftime("%Y-%m-%d").astype(object).where(parsed.notna(), None)


def daily_table(pairs: pd.DataFrame, labels, date_column: str) -> tuple[pd.DataFrame, int]:
    """One row per (date, entity): mentions, mean score and label counts; and how many pairs had no readable date."""
    days = utc_days(pairs["date"])
    undated = int(days.isna().sum())
    if len(pairs) and undated == len(pairs):
        raise FinsentError(
            f"--date_column {date_column}: no value reads as a date (e.g. {pairs['date'].iloc[0]!r}); "
            "give a column of dates such as 2024-03-01 or 2024-03-01T09:30:00Z"
        )
    dated = pairs.assign(date=days)[days.notna()]
    if dated.empty:
        return pd.DataFrame({c: [] for c in ["date", "entity", "mentions", "mean_score", *labels]}), undated
    groups = dated.groupby(["date", "entity"], sort=True)
    table = groups.agg(mentions=("score", "size"), mean_score=("score", "mean")).reset_index()
    counts = pd.crosstab([dated["date"], dated["entity"]], dated["label"]).reindex(columns=list(labels), fill_value=0)
    table = table.merge(counts.reset_index(), on=["date", "entity"], how="left")
    table["mean_score"] = table["mean_score"].round(6)
    for label in labels:
        table[label] = table[label].fillna(0).astype("int64")
    return table[["date", "entity", "mentions", "mean_score", *labels]], undated


def _put(fs, path: str, data: bytes) -> None:
    """Write a file whole: temp file and rename on local disk, one PUT on object storage."""
    if is_local(fs):
        from finsent.core.serialization import write_bytes

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes(Path(path), data)
    else:
        fs.pipe_file(path, data)


def write_daily(fs, out_root: str, table: pd.DataFrame, labels, title: str) -> dict[str, str]:
    """The table as CSV (formula-like cells quoted) and Parquet, and the HTML report; their names under out_root."""
    from finsent.apps.entity_report import report_html

    csv_table = table.assign(entity=table["entity"].map(neutralise_cell))
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    files = {
        "csv": (f"{DAILY}.csv", csv_table.to_csv(index=False, lineterminator="\n").encode("utf-8")),
        "parquet": (f"{DAILY}.parquet", parquet.getvalue()),
        "html": (REPORT, report_html(table, labels, title).encode("utf-8")),
    }
    with storage_errors(f"--output {out_root}"):
        for name, data in files.values():
            _put(fs, f"{out_root}/{name}", data)
    return {kind: name for kind, (name, _) in files.items()}


def entity_daily(fs, out_root: str, outputs: list[str], date_column: str, labels, title: str) -> dict:
    """Build and write the daily table from the shard outputs; what the summary records of it."""
    pairs = read_pairs(fs, [f"{out_root}/{name}" for name in outputs], date_column, labels)
    table, undated = daily_table(pairs, labels, date_column)
    files = write_daily(fs, out_root, table, labels, title)
    entities = int(table["entity"].nunique())
    return {**files, "date_column": date_column, "rows": len(table), "entities": entities, "undated": undated}
