"""Watchlist matching (issue 23): headlines written for it, each mention annotated, found exactly: nothing missed,
nothing else (names inside other words, amounts, bare tickers); and the watchlist file's one-line errors."""

from __future__ import annotations

import json
import re

import pytest

from finsent.core.errors import FinsentError
from finsent.data.entities import CLOSE, OPEN, EntityFormat, entity_input
from finsent.data.watchlist import Mention, given_pairs, read_watchlist, watchlist_pairs

WATCHLIST = """name,aliases,ticker
Tesla,Tesla Inc|Tesla Motors,TSLA
Ford Motor,Ford,F
Alphabet,Alphabet Inc|Google,GOOGL
AT&T,,T
Apple,,AAPL
JPMorgan Chase,JPMorgan|J.P. Morgan|JPM,JPM
Société Générale,SocGen,
Meta Platforms,Meta|Facebook,META
3M,,MMM
Straße AG,,
"""

# Each mention is written [as in the text](entity name); the headline is the text with the brackets taken out.
HEADLINES = [
    "[Tesla](Tesla) shares jump as [Ford](Ford Motor) cuts guidance",
    "[$TSLA](Tesla) rallies while [$f](Ford Motor) slips",
    "Fordham University endowment sells its Teslas; Afford and Tesla2 are no names",
    "[Ford Motor](Ford Motor) recalls 10,000 trucks and [FORD](Ford Motor) stock falls",
    "[Google](Alphabet) parent [Alphabet Inc](Alphabet) tops estimates",
    "[AT&T](AT&T) and [Apple](Apple)'s deal lifts [$T](AT&T) and [$aapl](Apple)",
    "Pineapple prices soar, Snapple sales slip, apples everywhere",
    "[J.P. Morgan](JPMorgan Chase) upgrades [Meta](Meta Platforms); Metaverse hype fades",
    "Analysts at [JPM](JPMorgan Chase) see [$JPM](JPMorgan Chase) at 200",
    "[Société Générale](Société Générale) and [SOCGEN](Société Générale) cut jobs, [SOCIÉTÉ GÉNÉRALE](Société Générale) says",
    "[3M](3M) settles for a $3M fine; 13M and 3MX are no mentions, [$MMM](3M) rises",
    "[Tesla  Motors](Tesla) and [TESLA\nINC](Tesla) in one breath",
    "T-Mobile gains; TSLA and $TSLAQ and $$TSLA are not cashtags of the watchlist",
    "[Google](Alphabet)-backed startup raises funds; GoogleX and Googled do not count",
    "[Facebook](Meta Platforms) rebrands, ([Tesla](Tesla)) and “[Apple](Apple)” quoted",
    "STRASSE AG (another spelling) is not listed: [Straße AG](Straße AG) and [STRAßE AG](Straße AG) only",
    "Metals and Applebee's and ATT and AT&Tx are none of them",
    "_Tesla and Tesla_ are joined to underscores; [tesla](Tesla). and [TeSlA](Tesla)!",
]
MARK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")


def parse(annotated: str) -> tuple[str, list[Mention]]:
    """The text of an annotated headline and its mentions, left to right."""
    text, mentions, last = "", [], 0
    for m in MARK.finditer(annotated):
        text += annotated[last : m.start()]
        mentions.append(Mention(m.group(2), m.group(1), len(text), len(text) + len(m.group(1))))
        text += m.group(1)
        last = m.end()
    return text + annotated[last:], mentions


@pytest.fixture
def watchlist(tmp_path):
    path = tmp_path / "watchlist.csv"
    path.write_text(WATCHLIST, encoding="utf-8")
    return read_watchlist(path)


def test_parse_reads_the_annotations():
    text, mentions = parse("[Tesla](Tesla) up, [Ford](Ford Motor) down")
    assert text == "Tesla up, Ford down"
    assert mentions == [Mention("Tesla", "Tesla", 0, 5), Mention("Ford Motor", "Ford", 10, 14)]


@pytest.mark.parametrize("annotated", HEADLINES, ids=range(len(HEADLINES)))
def test_every_mention_found_and_nothing_else(watchlist, annotated):
    text, expected = parse(annotated)
    found = watchlist.find(text)
    assert found == expected, text
    for m in found:
        assert text[m.start : m.end] == m.mention


def test_the_headlines_cover_every_entity_and_kind_of_form(watchlist):
    mentions = [m for h in HEADLINES for m in parse(h)[1]]
    assert {m.entity for m in mentions} == set(watchlist.names)
    assert sum(m.mention.startswith("$") for m in mentions) >= 5  # cashtags
    assert sum(m.mention != m.entity for m in mentions) >= 15  # aliases and other cases
    negatives = sum(not parse(h)[1] for h in HEADLINES)
    assert negatives >= 3


def test_pairs_one_per_entity_in_order_of_first_mention_with_every_mention_marked(watchlist):
    text = "Ford cuts guidance; Tesla jumps and FORD falls"
    pairs = watchlist_pairs(7, text, watchlist)
    assert [(p.row, p.entity, p.mention, p.start, p.end) for p in pairs] == [
        (7, "Ford Motor", "Ford", 0, 4),
        (7, "Tesla", "Tesla", 20, 25),
    ]
    assert pairs[0].spans == ((0, 4), (36, 40))
    marked = entity_input(text, pairs[0].entity, EntityFormat(), pairs[0].spans)
    assert marked == f"{OPEN}Ford{CLOSE} cuts guidance; Tesla jumps and {OPEN}FORD{CLOSE} falls"
    assert watchlist_pairs(8, "Markets were quiet", watchlist) == []


def test_given_pairs_find_the_mentions_or_none():
    pairs = given_pairs(1, "Tesla jumps as Ford cuts", ["Ford", " Ford ", "Nissan", ""])
    assert [(p.entity, p.mention, p.start, p.end) for p in pairs] == [
        ("Ford", "Ford", 15, 19),
        ("Nissan", "", None, None),
    ]


def test_json_watchlist_with_alias_lists_and_a_name_listed_twice(tmp_path):
    path = tmp_path / "watchlist.jsonl"
    rows = [
        {"name": "Alphabet", "aliases": ["Google", "Alphabet Inc"], "ticker": "$GOOGL"},
        {"name": "Alphabet", "aliases": "YouTube"},
        {"name": "Toyota", "ticker": 7203},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    wl = read_watchlist(path)
    assert wl.names == ["Alphabet", "Toyota"]
    text = "YouTube and Google lift $googl; $7203 slips"
    assert [(m.entity, m.mention) for m in wl.find(text)] == [
        ("Alphabet", "YouTube"),
        ("Alphabet", "Google"),
        ("Alphabet", "$googl"),
        ("Toyota", "$7203"),
    ]


BAD_WATCHLISTS = [
    ("company.csv", "company,aliases\nTesla,TSLA\n", "no column 'name' in the header ['company', 'aliases']"),
    ("noname.jsonl", '{"name": "Tesla"}\n{"company": "Ford"}\n', "noname.jsonl:2: no 'name' field"),
    ("blank.csv", "name,aliases\nTesla,\n  ,Ford\n", "blank.csv:3: empty name"),
    ("twice.csv", "name,aliases\nFord Motor,Ford\nFord Credit,ford|FMCC\n", "'ford' already names 'Ford Motor'"),
    ("name_alias.csv", "name,aliases\nAlphabet,Google\nGoogle,\n", "'Google' already names 'Alphabet'"),
    ("ticker.csv", "name,aliases,ticker\nAlphabet,,GOOG\nGoogle,$goog,\n", "'$goog' already names 'Alphabet'"),
    ("header.csv", "name,aliases\n", "no rows"),
    ("bad_aliases.jsonl", '{"name": "Tesla", "aliases": {"a": 1}}\n', "aliases must be a string"),
]


@pytest.mark.parametrize("name,content,message", BAD_WATCHLISTS, ids=[b[0] for b in BAD_WATCHLISTS])
def test_bad_watchlist_is_one_line_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FinsentError) as err:
        read_watchlist(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert name in str(err.value)


def test_missing_watchlist_file(tmp_path):
    with pytest.raises(FinsentError, match="nope.csv: no such file"):
        read_watchlist(tmp_path / "nope.csv")
