"""A watchlist of entities (name, aliases, ticker) and the mentions of them in text, and the (text, entity) pairs an
entity run scores: from an entity column, a request's entity list, or the watchlist's matches."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.data import tables
from finsent.data.entities import mention_spans


@dataclass(frozen=True)
class Mention:
    """One mention of a watchlist entity: the entity's name, the text as written, its character span."""

    entity: str
    mention: str
    start: int
    end: int


def _form_pattern(form: str) -> str:
    """A surface form as a regular expression: its words escaped, any run of whitespace between them."""
    return r"\s+".join(re.escape(word) for word in form.split())


@dataclass
class Watchlist:
    """Entities with the surface forms that name them; one regular expression finds them all, longest first."""

    names: list[str]
    forms: dict[str, str] = field(default_factory=dict)  # surface form as written -> entity name

    def __post_init__(self) -> None:
        # one group per form, longest first ("Ford Motor" before "Ford"); the group that matched names the entity
        self._order = sorted(self.forms, key=len, reverse=True)
        body = "|".join(f"({_form_pattern(f)})" for f in self._order) or r"(?!x)x"
        self._pattern = re.compile(r"(?<![\w$])(?:" + body + r")(?!\w)", re.IGNORECASE)

    def find(self, text: str) -> list[Mention]:
        """Every mention in the text, case-insensitive, on word boundaries (not inside another word), left to right."""
        return [
            Mention(self.forms[self._order[m.lastindex - 1]], m.group(m.lastindex), m.start(), m.end())
            for m in self._pattern.finditer(text)
        ]


def _cell(value) -> str:
    """A watchlist cell as one string, whitespace collapsed."""
    return " ".join(str(value if value is not None else "").split())


def _aliases(value, where: str) -> list[str]:
    """The aliases of a row: a string separated by `|`, or a JSON list."""
    if value is None:
        return []
    if isinstance(value, list):
        return [_cell(a) for a in value]
    if isinstance(value, dict):
        raise FinsentError(f"{where}: aliases must be a string separated by | or a list of strings")
    return [_cell(a) for a in str(value).split("|")]


def split_entities(value) -> list[str]:
    """An entity column's cell as entity names: a string (several separated by `|`, as a watchlist's aliases), a list,
    or null for none. The one reading of the column for predict --entity_column and score --entity_column."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split("|")
    return [str(x) for x in items if x is not None]


def read_watchlist(path: str | Path) -> Watchlist:
    """A watchlist table (CSV, TSV, JSON, JSONL, Parquet): `name`, optional `aliases` separated by `|` (a list in
    JSON), optional `ticker` (matched as the cashtag `$TICKER`; list the bare ticker among the aliases to match it too).
    A name listed twice gathers the aliases of both rows; one alias naming two entities is an error."""
    hint = "a watchlist needs a name column (optional: aliases separated by |, ticker)"
    rows = tables.read_rows(path, ("name",), hint)
    names: dict[str, None] = {}
    forms: dict[str, str] = {}  # as written -> name
    owner: dict[str, tuple[str, str]] = {}  # casefolded -> (name, as written)
    for row in rows:
        if "name" not in row.fields:
            raise FinsentError(f"{row.where}: no 'name' field; {hint}")
        name = _cell(row.fields.get("name"))
        if not name:
            raise FinsentError(f"{row.where}: empty name; every watchlist row names one entity")
        names[name] = None
        ticker = _cell(row.fields.get("ticker")).lstrip("$")
        for form in [name, *_aliases(row.fields.get("aliases"), row.where), *([f"${ticker}"] if ticker else [])]:
            if not form:
                continue
            other, _ = owner.setdefault(form.casefold(), (name, form))
            if other != name:
                raise FinsentError(f"{row.where}: {form!r} already names {other!r}; give each alias to one entity")
            forms.setdefault(form, name)
    if not names:
        raise FinsentError(f"{path}: no rows; {hint}")
    return Watchlist(list(names), forms)


@dataclass(frozen=True)
class Pair:
    """One (input row, entity) pair to score; spans of the entity's mentions where they were found."""

    row: int
    text: str
    entity: str
    mention: str = ""
    start: int | None = None
    end: int | None = None
    spans: tuple[tuple[int, int], ...] | None = None


def watchlist_pairs(row: int, text: str, watchlist: Watchlist) -> list[Pair]:
    """The pairs of one text: one per entity found, its first mention's span kept and every mention marked."""
    by_entity: dict[str, list[Mention]] = {}
    for m in watchlist.find(text):
        by_entity.setdefault(m.entity, []).append(m)
    return [
        Pair(row, text, name, ms[0].mention, ms[0].start, ms[0].end, tuple((m.start, m.end) for m in ms))
        for name, ms in by_entity.items()
    ]


def given_pairs(row: int, text: str, entities: list[str]) -> list[Pair]:
    """The pairs of one text with its entities given (an entity column, a request's list): their mentions found."""
    out = []
    for entity in dict.fromkeys(" ".join(str(e).split()) for e in entities):
        if not entity:
            continue
        spans = mention_spans(text, entity)
        first = spans[0] if spans else (None, None)
        out.append(Pair(row, text, entity, text[first[0] : first[1]] if spans else "", *first, None))
    return out
