"""The labelled financial corpora finsent knows by name, found by their files, each read into sentence-level rows
with an official test split where the corpus publishes one. PhraseBank and user tables are read by data.corpus."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.data.labels import LABEL2ID

PHRASEBANK = "phrasebank"
TWITTER = "twitter-financial-news"
SENTFIN = "sentfin"
FINENTITY = "finentity"
DATA_ENV = "FINSENT_DATA_DIR"
TWITTER_LABELS = {"0": "negative", "1": "positive", "2": "neutral"}  # Bearish, Bullish, Neutral


@dataclass(frozen=True)
class Corpus:
    """A corpus finsent recognises: its name, what its texts are, the files that identify it, its licence."""

    name: str
    kind: str
    folder: str
    files: tuple[str, ...]
    licence: str
    official_test: str | None = None  # the file whose rows are the published test split

    def locate(self, base: Path) -> Path | None:
        """The corpus folder (or PhraseBank's zip) under a data folder, or None."""
        for candidate in (base / self.folder, base):
            if all((candidate / f).is_file() for f in self.files):
                return candidate / self.files[0] if self.name == PHRASEBANK else candidate
        return None


CORPORA = (
    Corpus(
        PHRASEBANK,
        "news sentences",
        ".",
        ("FinancialPhraseBank-v1.0.zip",),
        "CC BY-NC-SA 3.0",
    ),
    Corpus(
        TWITTER,
        "finance tweets",
        "twitter-financial-news",
        ("sent_train.csv", "sent_valid.csv"),
        "MIT (dataset card of zeroshot/twitter-financial-news-sentiment)",
        official_test="sent_valid.csv",
    ),
    Corpus(
        SENTFIN,
        "news headlines (entity labels; headlines whose entities agree)",
        "sentfin",
        ("SEntFiN-v1.0.csv",),
        "research use, cite Sinha et al. 2022 (no licence file)",
    ),
    Corpus(
        FINENTITY,
        "news texts (entity spans; texts whose entities agree)",
        "finentity",
        ("FinEntity.json",),
        "ODC-BY (dataset card)",
    ),
)
BY_NAME = {c.name: c for c in CORPORA}
ALIASES = {"financial_phrasebank_local": PHRASEBANK, "twitter": TWITTER, "sentfin-v1.0": SENTFIN}


def data_dirs(explicit: str | Path | None = None) -> list[Path]:
    """Where corpora are looked for: --data_dir, $FINSENT_DATA_DIR, ../shared/data beside the working folder, ./data."""
    found = [Path(explicit)] if explicit else []
    if os.environ.get(DATA_ENV):
        found.append(Path(os.environ[DATA_ENV]))
    found += [Path.cwd().parent / "shared" / "data", Path.cwd() / "data"]
    return [p.expanduser() for p in found]


def find(name: str, explicit: str | Path | None = None) -> Path:
    """The path of a corpus given by name; one line naming where it was looked for when it is missing."""
    corpus = BY_NAME[ALIASES.get(name, name)]
    dirs = data_dirs(explicit)
    for base in dirs:
        where = corpus.locate(base)
        if where is not None:
            return where
    looked = ", ".join(str(d / corpus.folder) for d in dirs)
    raise FinsentError(
        f"{name}: corpus not found (looked for {', '.join(corpus.files)} in {looked}); pass its path, or set {DATA_ENV}"
    )


def recognise(path: Path) -> Corpus | None:
    """The known corpus a folder or file is, by its files; None for PhraseBank files and user tables."""
    names = {p.name for p in path.iterdir()} if path.is_dir() else {path.name}
    for corpus in CORPORA[1:]:
        if names >= set(corpus.files) or (path.is_file() and path.name in corpus.files and len(corpus.files) == 1):
            return corpus
        if path.is_dir() and path.name == corpus.folder and not names >= set(corpus.files):
            missing = sorted(set(corpus.files) - names)
            raise FinsentError(
                f"{path}: a {corpus.name} folder without {', '.join(missing)}; put the corpus files there or pass another path"
            )
    if path.is_file() and path.name in ("sent_train.csv", "sent_valid.csv"):
        raise FinsentError(
            f"{path}: one file of {TWITTER}; pass its folder (with sent_train.csv and sent_valid.csv) or the name {TWITTER}"
        )
    return None


def _label(raw: str, where: str) -> int:
    label = str(raw).strip().lower()
    if label not in LABEL2ID:
        raise FinsentError(f"{where}: unknown label {raw!r}; expected positive, negative or neutral")
    return LABEL2ID[label]


def _read_csv(path: Path) -> list[dict]:
    try:
        return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except UnicodeDecodeError as e:
        raise FinsentError(f"{path}: not UTF-8 ({e.reason} at byte {e.start}); save it as UTF-8") from None


def _twitter_rows(path: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    def rows(name: str) -> list[tuple[str, int]]:
        out = []
        for lineno, row in enumerate(_read_csv(path / name), start=2):
            if "text" not in row or "label" not in row:
                raise FinsentError(f"{path / name}: no text and label columns; is it Twitter Financial News?")
            raw = str(row["label"]).strip()
            if raw not in TWITTER_LABELS:
                raise FinsentError(
                    f"{path / name}:{lineno}: label {raw!r}; expected 0 (bearish), 1 (bullish), 2 (neutral)"
                )
            out.append((str(row["text"]).strip(), LABEL2ID[TWITTER_LABELS[raw]]))
        return out

    return rows("sent_train.csv"), rows("sent_valid.csv")


def _agreeing(labels: list[int]) -> int | None:
    """The one label of a text whose entities all carry it, else None."""
    ids = set(labels)
    return ids.pop() if len(ids) == 1 else None


def sentfin_records(path: Path) -> list[tuple[str, list[tuple[str, int]]]]:
    """SEntFiN 1.0: each headline with its (entity, label) decisions (texts as given, entities' whitespace
    collapsed)."""
    file = path / "SEntFiN-v1.0.csv" if path.is_dir() else path
    out = []
    for lineno, row in enumerate(_read_csv(file), start=2):
        where = f"{file}:{lineno}"
        if "Title" not in row or "Decisions" not in row:
            raise FinsentError(f"{file}: no Title and Decisions columns; is it SEntFiN 1.0?")
        try:
            decisions = json.loads(row["Decisions"])
        except json.JSONDecodeError:
            decisions = None
        if not isinstance(decisions, dict):
            raise FinsentError(f"{where}: field Decisions is not a JSON object of entity -> label")
        out.append(
            (str(row["Title"]).strip(), [(" ".join(str(e).split()), _label(v, where)) for e, v in decisions.items()])
        )
    return out


def finentity_records(path: Path) -> list[tuple[str, list[tuple[str, int]]]]:
    """FinEntity: each text with the (entity, label) of each annotated span (an entity may come twice)."""
    file = path / "FinEntity.json" if path.is_dir() else path
    try:
        items = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FinsentError(f"{file}: not a JSON list of FinEntity records ({e})") from None
    out = []
    for i, item in enumerate(items):
        where = f"{file}: record {i + 1}"
        if not isinstance(item, dict) or "content" not in item:
            raise FinsentError(f"{where}: no 'content' field; is it FinEntity.json?")
        spans = [a for a in item.get("annotations") or [] if isinstance(a, dict)]
        pairs = [(" ".join(str(a.get("value", "")).split()), _label(a.get("label", ""), where)) for a in spans]
        out.append((" ".join(str(item["content"]).split()), pairs))
    return out


ENTITY_READERS: dict[str, Callable[[Path], list[tuple[str, list[tuple[str, int]]]]]] = {
    SENTFIN: sentfin_records,
    FINENTITY: finentity_records,
}


def _sentence_level(records) -> tuple[list[tuple[str, int]], list]:
    """Texts whose entities all carry one label, as sentence-level rows."""
    rows = [(text, _agreeing([lab for _, lab in pairs])) for text, pairs in records if pairs]
    return [(t, lab) for t, lab in rows if lab is not None], []


def _sentfin_rows(path: Path) -> tuple[list[tuple[str, int]], list]:
    return _sentence_level(sentfin_records(path))


def _finentity_rows(path: Path) -> tuple[list[tuple[str, int]], list]:
    return _sentence_level(finentity_records(path))


READERS: dict[str, Callable[[Path], tuple[list, list]]] = {
    TWITTER: _twitter_rows,
    SENTFIN: _sentfin_rows,
    FINENTITY: _finentity_rows,
}


def read_corpus(corpus: Corpus, path: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(rows, official test rows) of a known corpus other than PhraseBank."""
    return READERS[corpus.name](path)
