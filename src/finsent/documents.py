"""Long documents: extract text and sections (.txt/.md/.html/.pdf), split sentences with offsets, score and aggregate."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from finsent.errors import FinsentError
from finsent.inference import is_valid_unicode

# A document or section is positive when its score (mean P(positive) - P(negative) over its sentences) is at least
# NEUTRAL_BAND, negative when it is at most -NEUTRAL_BAND, neutral in between.
NEUTRAL_BAND = 0.1
FORMATS = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html", ".pdf": "pdf"}
STDIN = "-"
MAX_DOCUMENT_CHARS = 200_000  # POST /analyze
MAX_QUESTIONS = 20
MAX_QUESTION_CHARS = 1_000
MAX_TOP_K = 50
DOCUMENTS_EXTRA = "pip install 'finsent[documents]'"
# Abbreviations of company names the Punkt model may not know; they end a sentence only before a sentence starter.
FINANCE_ABBREVIATIONS = ("corp", "inc", "ltd", "plc", "oyj", "abp", "bhd", "pte")
# Never sentence-final before a capitalised word ("approx. EUR 2 bn").
NEVER_FINAL = ("approx", "appr", "ca", "abt", "incl", "excl")
# Units such as "mn." and "bn." are left to Punkt (a period there mostly ends a sentence); a "sentence" that starts with
# a lower-case letter ("EUR 13.1 mn. from EUR 8.7 mn.") is joined to the one before it.
MD_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
MD_FENCE = re.compile(r"^ {0,3}(```|~~~)")
BULLET = re.compile(r"^[ \t]*(?:[-*+\u2022\u25e6\u25aa\u2023\u2013]|\d{1,3}[.)])[ \t]+")
TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$|^[ \t]*\S[^\t]*\t+\S")  # | a | b | or tab-separated cells


@dataclass(frozen=True)
class Section:
    """A titled part of a document: [start, end) of its body in the extracted text (headings are not in it)."""

    title: str
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    """Extracted text, where it came from, and its sections in order."""

    source: str
    text: str
    sections: tuple[Section, ...]


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    section: int


def _need(module: str, package: str):
    """Import a library of the `documents` extra, or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FinsentError(f"reading documents needs {package}: {DOCUMENTS_EXTRA}") from None


# ---- extraction ------------------------------------------------------------------------------------------------


def whole(source: str, text: str, title: str = "") -> Document:
    """Plain text: one section."""
    return Document(source, text, (Section(title, 0, len(text)),))


def from_markdown(source: str, text: str) -> Document:
    """Markdown: each ATX heading (`#` to `######`, outside code fences) starts a section; the text is the source."""
    sections, title, body_start, fenced, offset = [], "", 0, False, 0
    for line in text.splitlines(keepends=True):
        if MD_FENCE.match(line):
            fenced = not fenced
        m = None if fenced else MD_HEADING.match(line.rstrip("\r\n"))
        if m:
            sections.append(Section(title, body_start, offset))
            title, body_start = m.group(2).strip(), offset + len(line)
        offset += len(line)
    sections.append(Section(title, body_start, len(text)))
    return Document(source, text, tuple(sections))


HTML_SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "button", "select"}
HTML_SECTION = {"h1", "h2", "h3"}
HTML_BLOCK = {
    *HTML_SECTION,
    *("address", "article", "aside", "blockquote", "dd", "details", "div", "dl", "dt", "figcaption", "figure"),
    *("footer", "form", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section"),
    *("summary", "table", "tbody", "thead", "tfoot", "tr", "ul", "caption"),
}


class _HtmlText:
    """Walk an HTML tree into text: blocks on their own lines, table rows as `| a | b |`, h1-h3 as section starts."""

    def __init__(self):
        self.parts: list[str] = []
        self.size = 0
        self.headings: list[tuple[str, int, int]] = []  # title, heading start, body start

    def add(self, s: str) -> None:
        if s:
            self.parts.append(s)
            self.size += len(s)

    def ends_with_space(self) -> bool:
        return not self.parts or self.parts[-1][-1].isspace()

    def block_break(self) -> None:
        if self.parts and not self.parts[-1].endswith("\n\n"):
            self.add("\n\n" if not self.parts[-1].endswith("\n") else "\n")

    def walk(self, node) -> None:
        from bs4 import Comment, NavigableString, Tag

        if isinstance(node, Comment) or (isinstance(node, NavigableString) and type(node) is not NavigableString):
            return
        if isinstance(node, NavigableString):
            s = re.sub(r"\s+", " ", str(node))
            self.add(s.lstrip() if self.ends_with_space() else s)
            return
        if not isinstance(node, Tag) or node.name in HTML_SKIP:
            return
        if node.name in HTML_SECTION:
            self.block_break()
            start = self.size
            title = node.get_text(" ", strip=True)
            self.add(title)
            self.block_break()
            self.headings.append((title, start, self.size))
            return
        if node.name == "br":
            self.add("\n")
            return
        block = node.name in HTML_BLOCK
        if block:
            self.block_break()
        if node.name == "tr":
            self.add("| ")
        for child in node.children:
            self.walk(child)
            if isinstance(child, Tag) and child.name in ("td", "th"):
                self.add(" | " if not self.ends_with_space() else "| ")
        if block:
            self.block_break()


def from_html(source: str, html: str) -> Document:
    """HTML: the visible text, block by block; each h1-h3 starts a section."""
    bs4 = _need("bs4", "beautifulsoup4")
    soup = bs4.BeautifulSoup(html, "html.parser")
    walker = _HtmlText()
    walker.walk(soup.body or soup)
    text = "".join(walker.parts)
    sections, title, body = [], "", 0
    for heading, start, body_start in walker.headings:
        sections.append(Section(title, body, start))
        title, body = heading, body_start
    sections.append(Section(title, body, len(text)))
    return Document(source, text, tuple(sections))


def _outline(reader) -> list[tuple[str, int]]:
    """(title, page index) of the PDF outline's entries, depth first, in reading order."""
    out = []

    def visit(items) -> None:
        for item in items:
            if isinstance(item, list):
                visit(item)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # noqa: BLE001 - a broken outline entry is skipped, the text is still read
                continue
            if page is not None and page >= 0 and str(item.title or "").strip():
                out.append((str(item.title).strip(), page))

    try:
        visit(reader.outline)
    except Exception:  # noqa: BLE001 - pypdf raises many types on damaged outlines
        return []
    return out


def from_pdf(source: str, path: Path) -> Document:
    """PDF: the text of every page; sections from the outline, else one a page."""
    pypdf = _need("pypdf", "pypdf")
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # damaged files end in one FinsentError line, not warnings
    hint = "save it again as PDF or extract its text to a .txt file"
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise FinsentError(f"{source}: the PDF is encrypted with a password; decrypt it first (qpdf --decrypt)")
        pages = [page.extract_text() or "" for page in reader.pages]
    except FinsentError:
        raise
    except Exception as e:  # noqa: BLE001 - pypdf raises many error types on damaged files
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FinsentError(f"{source}: not a readable PDF ({detail}); {hint}") from None
    starts, text = [], ""
    for page in pages:
        text += "\n\n" if text else ""
        starts.append(len(text))
        text += page
    bounds = [*starts[1:], len(text)]
    outline = [(title, page) for title, page in _outline(reader) if page < len(pages)]
    if not outline:
        sections = [Section(f"page {i + 1}", starts[i], bounds[i]) for i in range(len(pages))]
        return Document(source, text, tuple(s for s in sections if text[s.start : s.end].strip()))
    marks = []  # (heading start, body start, title): at the title's line on its page where found, else the page start
    for title, page in sorted(outline, key=lambda t: t[1]):
        floor = max(starts[page], marks[-1][1] if marks else 0)
        found = text.lower().find(title.lower(), floor, bounds[page])
        if found >= 0:
            line_end = text.find("\n", found)
            marks.append((found, line_end if 0 <= line_end < bounds[page] else found + len(title), title))
        else:
            marks.append((floor, floor, title))
    sections = [Section("", 0, marks[0][0])]
    for (_, body, title), nxt in zip(marks, [*marks[1:], (len(text), len(text), "")]):
        sections.append(Section(title, body, nxt[0]))
    return Document(source, text, tuple(sections))


def read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise FinsentError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8") from None
    except OSError as e:
        raise FinsentError(f"{path}: cannot read ({e.strerror})") from None


def read_document(path: str | Path) -> Document:
    """One .txt, .md, .html or .pdf file."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise FinsentError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; give .txt, .md, .html or .pdf")
    if not path.is_file():
        raise FinsentError(f"{path}: no such file")
    if kind == "pdf":
        return from_pdf(str(path), path)
    text = read_text_file(path)
    if kind == "markdown":
        return from_markdown(str(path), text)
    if kind == "html":
        return from_html(str(path), text)
    return whole(str(path), text, path.name)


def input_paths(inputs: Sequence[str]) -> list[str]:
    """Expand folders into their supported files (recursively, sorted); `-` is stdin."""
    out = []
    for item in inputs:
        path = Path(item)
        if item == STDIN:
            out.append(item)
        elif path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
            if not found:
                raise FinsentError(f"{path}: no .txt, .md, .html or .pdf files in this folder")
            out.extend(found)
        elif not path.exists():
            raise FinsentError(f"{path}: no such file or folder")
        else:
            out.append(item)
    return out


def load_documents(inputs: Sequence[str]) -> Iterator[Document]:
    """Read every input (files, folders, `-` for stdin as Markdown, as POST /analyze), one document at a time."""
    for item in input_paths(inputs):
        yield from_markdown("<stdin>", sys.stdin.read()) if item == STDIN else read_document(item)


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


# ---- scores and aggregates -------------------------------------------------------------------------------------


def polarity(probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """P(positive) - P(negative) per row."""
    labels = list(labels)
    if "positive" not in labels or "negative" not in labels:
        raise FinsentError(f"the model's labels {labels} lack 'positive' or 'negative'; analyze needs both")
    return probs[:, labels.index("positive")] - probs[:, labels.index("negative")]


def score_label(score: float) -> str:
    """The sign of a score, with |score| < NEUTRAL_BAND neutral."""
    return "positive" if score >= NEUTRAL_BAND else "negative" if score <= -NEUTRAL_BAND else "neutral"


def aggregate(probs: np.ndarray, labels: Sequence[str]) -> dict:
    """label, score and per-label counts (of argmax predictions) over rows of probabilities."""
    score = float(polarity(probs, labels).mean()) if len(probs) else 0.0
    pred = np.bincount(probs.argmax(axis=1), minlength=len(labels)) if len(probs) else np.zeros(len(labels), int)
    return {"label": score_label(score), "score": round(score, 6), "counts": dict(zip(labels, map(int, pred)))}


def analyze_document(doc: Document, sents: Sequence[Sentence], probs: np.ndarray, labels: Sequence[str]) -> dict:
    """The report of one document from its sentences and their probabilities (rows in sentence order)."""
    from finsent.inference import Scores

    records = Scores(probs, np.zeros(len(probs), bool), tuple(labels)).records()
    section_of = np.array([s.section for s in sents])
    sections = []
    for i, sec in enumerate(doc.sections):
        rows = np.flatnonzero(section_of == i)
        if len(rows):
            sections.append({"title": sec.title, **aggregate(probs[rows], labels), "start": sec.start, "end": sec.end})
    renumber = {old: new for new, old in enumerate(sorted(set(section_of.tolist())))}
    return {
        "source": doc.source,
        **aggregate(probs, labels),
        "sections": sections,
        "sentences": [
            {
                "text": doc.text[s.start : s.end],
                "start": s.start,
                "end": s.end,
                "section": renumber[s.section],
                "label": r["label"],
                "confidence": r["confidence"],
                "probabilities": r["probabilities"],
            }
            for s, r in zip(sents, records)
        ],
        "evidence": [],
        "text": doc.text,
    }


def add_evidence(report: dict, questions: Sequence[str], similarities: np.ndarray, top_k: int) -> None:
    """Fill report["evidence"]: per question the top_k sentences by cosine similarity (rows: questions)."""
    from finsent.retrieval import top_k_rows

    for question, (idx, sims) in zip(questions, top_k_rows(similarities, top_k)):
        picked = [report["sentences"][i] for i in idx]
        report["evidence"].append(
            {
                "question": question,
                "sentences": [
                    {k: s[k] for k in ("text", "start", "end", "label", "confidence")}
                    | {"similarity": round(float(v), 6)}
                    for s, v in zip(picked, sims)
                ],
            }
        )


def check_questions(questions: Sequence[str], top_k: int) -> None:
    if top_k < 1:
        raise FinsentError(f"--top_k {top_k}: must be at least 1")
    for q in questions:
        if not q.strip():
            raise FinsentError("--ask: a question is empty; give some words to search for")


def prepare(docs: Iterable[Document]) -> list[tuple[Document, list[Sentence]]]:
    """Each document with its sentences; a document without any is bad input."""
    out = []
    for doc in docs:
        sents = sentences(doc)
        if not sents:
            raise FinsentError(f"{doc.source}: no sentences found (empty document, or a scanned PDF without text?)")
        out.append((doc, sents))
    return out


def analyze(
    predictor,
    docs: Sequence[tuple[Document, Sequence[Sentence]]],
    questions: Sequence[str] = (),
    top_k: int = 5,
    encoder=None,
) -> dict:
    """The whole report of prepared documents: scored sentence by sentence, aggregated, and the questions answered."""
    check_questions(questions, top_k)
    reports = []
    for doc, sents in docs:
        scores = predictor.score([model_text(doc.text[s.start : s.end]) for s in sents])
        reports.append(analyze_document(doc, sents, scores.probs, scores.labels))
    if questions:
        if encoder is None:
            from finsent.retrieval import default_encoder

            encoder = default_encoder()
        q_vecs = encoder.encode(questions)
        for report in reports:
            s_vecs = encoder.encode([model_text(s["text"]) for s in report["sentences"]])
            add_evidence(report, questions, q_vecs @ s_vecs.T, top_k)
    return {"model_version": predictor.info.version, "neutral_band": NEUTRAL_BAND, "documents": reports}


def analyze_text(predictor, text: str, questions: Sequence[str] = (), top_k: int = 5, encoder=None) -> dict:
    """POST /analyze: one plain-text document (Markdown headings start sections) and its questions."""
    return analyze(predictor, prepare([from_markdown("request", text)]), questions, top_k, encoder)


def ask_index(predictor, index, questions: Sequence[str], top_k: int = 5, encoder=None) -> dict:
    """Answer questions from a corpus index (finsent.retrieval.CorpusIndex): the top_k sentences, scored now."""
    check_questions(questions, top_k)
    if not questions:
        raise FinsentError("--index needs at least one --ask QUESTION")
    if encoder is None:
        from finsent.retrieval import default_encoder

        encoder = default_encoder()
    hits = index.search(encoder.encode(questions), top_k)
    rows = sorted({i for hit in hits for i, _ in hit})
    records = dict(zip(rows, predictor.score([model_text(index.rows[i]["text"]) for i in rows]).records()))
    evidence = [
        {
            "question": question,
            "sentences": [
                {k: index.rows[i][k] for k in ("source", "section", "text", "start", "end")}
                | {"label": records[i]["label"], "confidence": records[i]["confidence"], "similarity": round(sim, 6)}
                for i, sim in hit
            ],
        }
        for question, hit in zip(questions, hits)
    ]
    return {
        "model_version": predictor.info.version,
        "neutral_band": NEUTRAL_BAND,
        "index": {"path": str(index.path), "sentences": len(index.rows), "documents": len(index.manifest["documents"])},
        "documents": [],
        "evidence": evidence,
    }


class AnalyzeRequest(BaseModel):
    """POST /analyze: one document as text (Markdown headings start sections) and optional questions."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "text": "# Q3\nNet sales rose 12 % to EUR 13.1 mn. Operating profit fell.\n# Outlook\nWe expect growth.",
                    "questions": ["What happened to profit?"],
                    "top_k": 3,
                }
            ]
        },
    )

    text: Annotated[StrictStr, Field(min_length=1, max_length=MAX_DOCUMENT_CHARS)]
    questions: Annotated[list[StrictStr], Field(max_length=MAX_QUESTIONS)] = []
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 5

    @field_validator("text")
    @classmethod
    def _text(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is empty; send the document's text")
        if not is_valid_unicode(text):
            raise ValueError("text is not valid Unicode (a lone surrogate escape)")
        return text

    @field_validator("questions")
    @classmethod
    def _questions(cls, questions: list[str]) -> list[str]:
        for i, q in enumerate(questions):
            if not q.strip():
                raise ValueError(f"questions[{i}] is empty; every question needs at least one non-space character")
            if not is_valid_unicode(q):
                raise ValueError(f"questions[{i}] is not valid Unicode (a lone surrogate escape)")
            if len(q) > MAX_QUESTION_CHARS:
                raise ValueError(f"questions[{i}] has {len(q)} characters; at most {MAX_QUESTION_CHARS} are accepted")
        return questions
