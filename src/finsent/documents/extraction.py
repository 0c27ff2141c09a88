"""Long documents: extract text and sections (.txt/.md/.html/.pdf), split sentences with offsets, score and aggregate."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from finsent.core.errors import FinsentError

FORMATS = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html", ".pdf": "pdf"}
STDIN = "-"
DOCUMENTS_EXTRA = "pip install 'finsent[documents]'"
# Units such as "mn." and "bn." are left to Punkt (a period there mostly ends a sentence); a "sentence" that starts with
# a lower-case letter ("EUR 13.1 mn. from EUR 8.7 mn.") is joined to the one before it.
MD_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
MD_FENCE = re.compile(r"^ {0,3}(```|~~~)")


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
