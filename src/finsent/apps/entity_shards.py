"""`finsent score` with an entity run: each row's (text, entity) pairs, named by an entity column or found by a
watchlist, scored as one output row each: the row's columns, then entity, mention, start, end, then the predictions.

A row with no text or no entity keeps one output row with empty entity and prediction columns.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from finsent.apps.shards import ScoreConfig, append_scores, score_inputs, table_inputs
from finsent.data.entities import ENTITY, SENTENCE, EntityFormat, entity_input
from finsent.data.watchlist import Pair, Watchlist, given_pairs, read_watchlist, split_entities, watchlist_pairs
from finsent.runs.folder import require_task

ENTITY_COLUMNS = ("entity", "mention", "start", "end")


@dataclass(frozen=True)
class Pairing:
    """How an entity run's rows become pairs: an entity column or a watchlist, and the run's input format."""

    fmt: EntityFormat
    entity_column: str | None = None
    watchlist: Watchlist | None = None

    def pairs(self, row: int, text: str, cell) -> list[Pair]:
        """The pairs of one row's text; `cell` is the row's entity column value."""
        if self.watchlist is not None:
            return watchlist_pairs(row, text, self.watchlist)
        return given_pairs(row, text, split_entities(cell))

    def identity(self) -> dict:
        """What the pairs come from, recorded in each output's footer: a re-run with other entities scores again."""
        if self.watchlist is None:
            return {"entity_column": self.entity_column, "input": self.fmt.to_json()}
        forms = json.dumps(sorted(self.watchlist.forms.items()), ensure_ascii=False).encode("utf-8")
        return {"watchlist_sha256": hashlib.sha256(forms).hexdigest(), "input": self.fmt.to_json()}


def pairing_for(cfg: ScoreConfig, model_dir: Path) -> Pairing | None:
    """The job's pairing for an entity run (None for a sentence run); one line when the run's task does not fit."""
    if not (cfg.entity_column or cfg.entities):
        require_task(model_dir, SENTENCE, "finsent score")
        return None
    info = require_task(model_dir, ENTITY, "finsent score --entity_column/--entities")
    watchlist = read_watchlist(cfg.entities) if cfg.entities else None
    return Pairing(EntityFormat.from_json(info.entity_input), cfg.entity_column, watchlist)


def required_columns(cfg: ScoreConfig) -> tuple[tuple[str, str], ...]:
    """The columns besides the text that every shard must have, with the flag that names them."""
    named = (("entity_column", "--entity_column"), ("date_column", "--date_column"))
    return tuple((getattr(cfg, name), flag) for name, flag in named if getattr(cfg, name))


def entity_names(input_columns: list[str], entity_column: str | None) -> list[str]:
    """entity, mention, start, end; prefixed pred_ where the input has such a column (its entity column aside)."""
    taken = set(input_columns) - {entity_column}
    prefix = "pred_" if taken & set(ENTITY_COLUMNS) else ""
    return [prefix + c for c in ENTITY_COLUMNS]


def chunk_inputs(table, text_column: str, pairing: Pairing | None = None):
    """A chunk ready to score: the table of its output rows and each output row's model input (None: nothing to
    score); a row each for a sentence run, a row per (row, entity) pair for an entity run."""
    if pairing is None:
        return table_inputs(table, text_column)
    return entity_pairs(table, text_column, pairing)


def score_chunk(predictor, table, text_column: str, pairing: Pairing | None = None):
    """One chunk scored: its output rows with the prediction columns appended."""
    table, inputs = chunk_inputs(table, text_column, pairing)
    return append_scores(table, inputs, score_inputs(predictor, inputs), predictor.labels)


def entity_pairs(table, text_column: str, pairing: Pairing):
    """One output row per pair (a row without text or entity: one row of nulls), in input order, with its model
    input (None for a row of nulls)."""
    import pyarrow as pa

    table = table.replace_schema_metadata(None)
    texts = table.column(text_column).to_pylist()
    cells = table.column(pairing.entity_column).to_pylist() if pairing.entity_column else [None] * len(texts)
    rows: list[int] = []
    pairs: list[Pair | None] = []
    for i, text in enumerate(texts):
        found = pairing.pairs(i, text, cells[i]) if text is not None and text.strip() else []
        rows += [i] * max(1, len(found))
        pairs += found or [None]
    names = entity_names(table.column_names, pairing.entity_column)
    if pairing.entity_column in names:  # the input's entity column, named as an output column: the pair's entity
        table = table.drop_columns([pairing.entity_column])
    out = table.take(pa.array(rows, type=pa.int64()))
    values = [
        pa.array([p.entity if p else None for p in pairs], type=pa.string()),
        pa.array([(p.mention or None) if p else None for p in pairs], type=pa.string()),
        pa.array([p.start if p else None for p in pairs], type=pa.int64()),
        pa.array([p.end if p else None for p in pairs], type=pa.int64()),
    ]
    for name, value in zip(names, values):
        out = out.append_column(name, value)
    return out, [entity_input(p.text, p.entity, pairing.fmt, p.spans) if p else None for p in pairs]
