"""Sentence segmentation of long documents (nupunkt, with finance abbreviations and layout blocks)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from finsent.documents.extraction import Document, _need

# Abbreviations of company names the Punkt model may not know; they end a sentence only before a sentence starter.
FINANCE_ABBREVIATIONS = ("corp", "inc", "ltd", "plc", "oyj", "abp", "bhd", "pte")
# Never sentence-final before a capitalised word ("approx. EUR 2 bn").
NEVER_FINAL = ("approx", "appr", "ca", "abt", "incl", "excl")
BULLET = re.compile(r"^[ \t]*(?:[-*+\u2022\u25e6\u25aa\u2023\u2013]|\d{1,3}[.)])[ \t]+")
TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$|^[ \t]*\S[^\t]*\t+\S")  # | a | b | or tab-separated cells


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    section: int


# ---- sentences -------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def segmenter():
    """nupunkt's Punkt model with financial abbreviations; its own instance, so the library's shared one is untouched."""
    nupunkt = _need("nupunkt", "nupunkt")
    from nupunkt.models import get_default_model_path

    tok = nupunkt.PunktSentenceTokenizer.load(get_default_model_path())
    tok.add_abbreviations(list(FINANCE_ABBREVIATIONS + NEVER_FINAL))
    tok._TITLE_ABBREVS = tok._TITLE_ABBREVS | set(NEVER_FINAL)  # documented per-instance override
    return tok


def blocks(text: str, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_table_row) of the text's blocks: paragraphs (runs of lines), list items and table rows."""
    para: tuple[int, int] | None = None
    pos = start
    for line in text[start:end].splitlines(keepends=True):
        line_start, content = pos, line.rstrip("\r\n")
        pos += len(line)
        bullet = BULLET.match(content)
        table = TABLE_ROW.match(content)
        if not content.strip() or bullet or table:
            if para:
                yield para[0], para[1], False
                para = None
            if table:
                yield line_start, line_start + len(content), True
            elif bullet:
                para = (line_start + bullet.end(), line_start + len(content))
        else:
            para = (para[0] if para else line_start, line_start + len(content))
    if para:
        yield para[0], para[1], False


def _join_lowercase(text: str, spans) -> list[tuple[int, int]]:
    """Join each span that starts with a lower-case letter to the span before it."""
    out: list[tuple[int, int]] = []
    for s, e in spans:
        head = text[s:e].lstrip()[:1]
        if out and head.islower():
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence [start, end) offsets in text[start:end]; spans without a letter (rules, numbers) are dropped."""
    end = len(text) if end is None else end
    tok = segmenter()
    spans = []
    for b_start, b_end, table_row in blocks(text, start, end):
        parts = (
            [(0, b_end - b_start)]
            if table_row
            else _join_lowercase(text[b_start:b_end], tok.span_tokenize(text[b_start:b_end]))
        )
        for s, e in parts:
            s, e = b_start + s, b_start + e
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            if any(c.isalpha() for c in text[s:e]):
                spans.append((s, e))
    return spans


def sentences(doc: Document) -> list[Sentence]:
    return [
        Sentence(s, e, i) for i, sec in enumerate(doc.sections) for s, e in sentence_spans(doc.text, sec.start, sec.end)
    ]


def model_text(text: str) -> str:
    """What the model reads: whitespace runs (line breaks of a PDF or a wrapped paragraph) as one space."""
    return " ".join(text.split())
