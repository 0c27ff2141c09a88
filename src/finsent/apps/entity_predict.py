"""Entity-level prediction: each input row's (text, entity) pairs, from an entity column or a watchlist's matches, as
rows that apps.predict scores like sentences (same Predictor, chunks, streaming and order), one output row a pair."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from finsent.apps.predict import Row, Source
from finsent.core.errors import FinsentError
from finsent.core.text import is_valid_unicode
from finsent.data.entities import ENTITY, SENTENCE, EntityFormat, entity_input
from finsent.data.watchlist import Pair, Watchlist, given_pairs, read_watchlist, split_entities, watchlist_pairs
from finsent.runs.folder import require_task

MATCH_COLUMNS = ("entity", "mention", "start", "end")  # what a watchlist match adds to its input row


def _help(text: str, **argparse_kwargs) -> dict:
    return {"help": text, **argparse_kwargs}


@dataclass(kw_only=True)
class EntityOptions:
    """Where an entity run's entities come from: a column of the input, or a watchlist found in the text."""

    entity_column: str | None = field(
        default=None,
        metadata=_help(
            "entity runs: the --input column naming the entity to score each text for (one output row a pair; in JSON "
            "a list of entities gives a row each)",
            metavar="COLUMN",
        ),
    )
    entities: str | None = field(
        default=None,
        metadata=_help(
            "entity runs: a watchlist table (name, optional aliases separated by |, optional ticker matched as $TICKER) "
            "whose mentions are found in each text: one output row per (row, entity found) with entity, mention, "
            "start, end",
            metavar="WATCHLIST",
        ),
    )

    def __post_init__(self) -> None:
        if self.entity_column is not None and self.entities is not None:
            raise FinsentError("--entity_column and --entities: pass one of them (given entities, or found ones)")

    @property
    def given(self) -> bool:
        return self.entity_column is not None or self.entities is not None

    @property
    def flag(self) -> str:
        return "--entity_column" if self.entity_column is not None else "--entities"


@dataclass
class PairCount:
    """How many input rows the pairs came from (filled as the rows stream)."""

    rows: int = 0


def check_task(options: EntityOptions, *run_dirs: str | None) -> EntityFormat | None:
    """The entity run's input format when entities are given; None for a sentence run without; else one line."""
    if not options.given:
        for run_dir in filter(None, run_dirs):
            require_task(run_dir, SENTENCE, "finsent predict without --entity_column or --entities")
        return None
    infos = [require_task(d, ENTITY, f"finsent predict {options.flag}") for d in filter(None, run_dirs)]
    return EntityFormat.from_json(infos[0].entity_input)


def load_watchlist(options: EntityOptions, from_table: bool) -> Watchlist | None:
    """The --entities watchlist (read before the model loads); an --entity_column needs an input table."""
    if options.entity_column is not None and not from_table:
        raise FinsentError(
            f"--entity_column {options.entity_column}: needs --input, a table with that column; sentences from "
            "arguments or stdin name no entity (--entities WATCHLIST finds them in the text)"
        )
    return read_watchlist(options.entities) if options.entities is not None else None


def pair_source(
    source: Source, fmt: EntityFormat, options: EntityOptions, watchlist: Watchlist | None, count: PairCount
) -> Source:
    """The source's rows as (text, entity) rows: fields plus `entity` (and mention, start, end for a watchlist), text
    the string the model reads; a row naming no entity is kept once, unscored. The header, or else the first row, is
    checked now, before the model loads."""
    added = list(MATCH_COLUMNS) if watchlist is not None else ["entity"]
    column = options.entity_column
    taken = [c for c in added if c != column]
    rows = _pair_rows(source.rows, fmt, column, watchlist, taken, count)
    try:
        if source.columns is not None:
            if column is not None and column not in source.columns:
                raise FinsentError(
                    f"{source.name}: no column {column!r} in the header {source.columns}; set --entity_column to the "
                    "column naming the entity"
                )
            _check_free(source.name, "a column", source.columns, taken)
        first = next(rows, None)
    except FinsentError:
        source.close()
        raise
    columns = None if source.columns is None else [*source.columns, *[c for c in added if c not in source.columns]]
    rows = itertools.chain([first] if first is not None else [], rows)
    return Source(source.name, columns, rows, source.size, source.position, source.close)


def _check_free(where: str, what: str, names, taken: list[str]) -> None:
    for name in taken:
        if name in names:
            raise FinsentError(
                f"{where}: has {what} {name!r}, which the entity predictions fill; rename it (output columns: "
                f"{', '.join(taken)})"
            )


def _pair_rows(
    rows: Iterator[Row], fmt: EntityFormat, column: str | None, watchlist: Watchlist | None, taken, count: PairCount
) -> Iterator[Row]:
    for row in rows:
        count.rows += 1
        _check_free(row.where, "a field", row.fields, taken)
        if watchlist is not None:
            pairs = watchlist_pairs(count.rows, row.text, watchlist) if row.text is not None else []
        else:
            pairs = given_pairs(count.rows, row.text or "", _row_entities(row, column))
        if not pairs:
            empty = dict.fromkeys(["entity", *(taken if watchlist is not None else [])])
            yield Row({**row.fields, **empty}, None, row.where, no_entity=row.text is not None)
        for pair in pairs:
            text = None if row.text is None else entity_input(row.text, pair.entity, fmt, pair.spans)
            yield Row({**row.fields, **_pair_fields(pair, watchlist is not None)}, text, row.where)


def _pair_fields(pair: Pair, found: bool) -> dict:
    if not found:
        return {"entity": pair.entity}
    return {"entity": pair.entity, "mention": pair.mention, "start": pair.start, "end": pair.end}


def _row_entities(row: Row, column: str) -> list[str]:
    """The entities a row gives in its entity column: a string (several separated by |), a list of strings (JSON), or
    none (null or empty)."""
    if column not in row.fields:
        raise FinsentError(f"{row.where}: no field {column!r}; set --entity_column to the field naming the entity")
    value = row.fields[column]
    values = value if isinstance(value, list) else [] if value is None else [value]
    for v in values:
        if not isinstance(v, (str, int)) or isinstance(v, bool):
            raise FinsentError(
                f"{row.where}: field {column!r} must be an entity name or a list of names, got {type(v).__name__}"
            )
        if isinstance(v, str) and not is_valid_unicode(v):
            raise FinsentError(f"{row.where}: field {column!r} is not valid Unicode (a lone surrogate escape)")
    return [name for v in values for name in split_entities(str(v))]
