"""Load Financial PhraseBank or user data, de-duplicate, and split without leakage."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections import Counter
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.data import corpora, tables
from finsent.data.labels import LABEL2ID, LABELS
from finsent.data.splits import LabelledData, deduplicate, normalise
from finsent.data.tables import TABLE_FORMATS, read_rows, table_format

AGREEMENT_FILES = {
    "50": "Sentences_50Agree.txt",
    "66": "Sentences_66Agree.txt",
    "75": "Sentences_75Agree.txt",
    "all": "Sentences_AllAgree.txt",
}
HUB_DATASET = "takala/financial_phrasebank"
HUB_FILE = "data/FinancialPhraseBank-v1.0.zip"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _parse_label(raw: str, where: str) -> int:
    label = raw.strip().lower()
    if label not in LABEL2ID:
        raise FinsentError(f"{where}: unknown label {raw.strip()!r}; expected one of {', '.join(LABELS)}")
    return LABEL2ID[label]


def parse_phrasebank_lines(raw: bytes, name: str) -> list[tuple[str, int]]:
    """Parse `sentence@label` lines (latin-1, CRLF); split on the last '@'."""
    rows = []
    for lineno, line in enumerate(raw.decode("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        if "@" not in line:
            raise FinsentError(f"{name}:{lineno}: no '@label' at the end of the line; expected 'sentence@label'")
        text, label = line.rsplit("@", 1)
        if not text.strip():
            raise FinsentError(f"{name}:{lineno}: empty sentence before '@{label.strip()}'")
        rows.append((text.strip(), _parse_label(label, f"{name}:{lineno}")))
    if not rows:
        raise FinsentError(f"{name}: no sentences found; expected 'sentence@label' lines")
    return rows


def _read_phrasebank(path: Path, agreement: str) -> tuple[list[tuple[str, int]], str]:
    fname = AGREEMENT_FILES[agreement]
    if path.is_dir():
        candidates = [path / fname, path / "FinancialPhraseBank-v1.0" / fname]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FinsentError(
                f"{path}: no {fname} in this folder; pass the PhraseBank zip, its extracted folder or a Sentences_*.txt"
            )
        return parse_phrasebank_lines(found.read_bytes(), str(found)), sha256_of(found)
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if m.endswith("/" + fname) and "__MACOSX" not in m]
                if not members:
                    raise FinsentError(f"{path}: the zip has no {fname}; is it FinancialPhraseBank-v1.0.zip?")
                raw = zf.read(members[0])
        except zipfile.BadZipFile:
            raise FinsentError(f"{path}: not a valid zip file; download FinancialPhraseBank-v1.0.zip again") from None
        return parse_phrasebank_lines(raw, f"{path}:{members[0]}"), sha256_of(path)
    return parse_phrasebank_lines(path.read_bytes(), str(path)), sha256_of(path)


def _read_table(path: Path, text_column: str, label_column: str) -> list[tuple[str, int]]:
    """Read a user table (CSV, TSV, JSON, JSONL, Parquet) with text and label columns."""
    hint = "set --text_column/--label_column"
    rows = []
    for row in read_rows(path, (text_column, label_column), hint):
        for col in (text_column, label_column):
            if col not in row.fields:
                raise FinsentError(f"{row.where}: missing field {col!r}; {hint}")
        text, label = row.fields[text_column], row.fields[label_column]
        rows.append((str(text or "").strip(), _parse_label(str(label or ""), row.where)))
    if not rows:
        raise FinsentError(f"{path}: no rows found")
    return rows


def _download_from_hub() -> Path:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HUB_DATASET, HUB_FILE, repo_type="dataset"))
    except Exception as e:  # noqa: BLE001 - any hub failure gets the same advice
        raise FinsentError(
            f"could not fetch {HUB_FILE} from the hub dataset {HUB_DATASET} ({type(e).__name__}); "
            "download FinancialPhraseBank-v1.0.zip yourself and pass its path as --data_path"
        ) from None


def _as_list(data_path) -> list:
    return [data_path] if isinstance(data_path, (str, Path)) else list(data_path)


def read_mix(path: Path) -> list[dict]:
    """A mix file (JSON or YAML): {"sources": [{"name" or "path", "agreement", "cap", "weight"}, ...]}."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            spec = yaml.safe_load(text)
        else:
            spec = json.loads(text)
    except Exception as e:  # noqa: BLE001 - both parsers raise their own types
        raise FinsentError(f"{path}: not a valid mix file ({str(e).splitlines()[0]})") from None
    sources = spec.get("sources") if isinstance(spec, dict) else None
    if not isinstance(sources, list) or not sources:
        raise FinsentError(f"{path}: a mix file needs a non-empty 'sources' list of {{name or path, cap, weight}}")
    for i, entry in enumerate(sources, start=1):
        if not isinstance(entry, dict) or not (entry.get("name") or entry.get("path")):
            raise FinsentError(f"{path}: source {i} needs a 'name' (a corpus) or a 'path'")
        unknown = set(entry) - {"name", "path", "agreement", "cap", "weight"}
        if unknown:
            raise FinsentError(
                f"{path}: source {i}: unknown field {sorted(unknown)[0]!r}; use name, path, agreement, cap, weight"
            )
        for key in ("cap", "weight"):
            value = entry.get(key, 1)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
                raise FinsentError(f"{path}: source {i}: {key} {value!r} must be a positive number")
        if str(entry.get("agreement", "all")).lower() not in AGREEMENT_FILES:
            raise FinsentError(
                f"{path}: source {i}: agreement {entry['agreement']!r}; expected one of {', '.join(AGREEMENT_FILES)}"
            )
        if entry.get("path") and not Path(entry["path"]).expanduser().is_absolute():  # relative to the mix file
            entry["path"] = str(path.parent / Path(entry["path"]).expanduser())
    return sources


def _is_mix(path: Path) -> bool:
    if path.suffix.lower() in (".yaml", ".yml"):
        return True
    if path.suffix.lower() == ".json" and path.is_file():
        head = path.read_text(encoding="utf-8", errors="replace").lstrip()[:1]
        return head == "{"
    return False


def _resolve(spec: str | Path) -> tuple[str, Path]:
    """(source name, path) of one --data_path entry: a corpus name, 'financial_phrasebank' (the hub) or a path."""
    spec = str(spec)
    if spec == "financial_phrasebank":
        return corpora.PHRASEBANK, _download_from_hub()
    if spec in corpora.BY_NAME or spec in corpora.ALIASES:
        path = corpora.find(spec)
        return corpora.ALIASES.get(spec, spec), path
    path = Path(spec).expanduser()
    if not path.exists():
        known = ", ".join(c.name for c in corpora.CORPORA)
        raise FinsentError(
            f"{path}: no such file or folder, nor a corpus name ({known}); pass --data_path pointing at "
            "FinancialPhraseBank-v1.0.zip, a Sentences_*.txt, a corpus folder or a CSV/JSONL"
        )
    return "", path


def load_source(spec, agreement: str, text_column: str, label_column: str) -> LabelledData:
    """One source: PhraseBank, a known corpus or a user table, de-duplicated, each row tagged with the source."""
    name, path = _resolve(spec)
    if path.is_file() and path.stat().st_size == 0:
        raise FinsentError(f"{path}: the file is empty")
    test: list[tuple[str, int]] = []
    corpus = corpora.recognise(path)
    if corpus is not None:
        (rows, test), digest, kind, name = corpora.read_corpus(corpus, path), _digest(path), corpus.name, corpus.name
    elif path.is_file() and table_format(path) in TABLE_FORMATS:
        rows, digest, kind = _read_table(path, text_column, label_column), sha256_of(path), "table"
        name = name or tables.base_name(path.name)
    else:
        (rows, digest), kind, name = _read_phrasebank(path, agreement), "phrasebank", corpora.PHRASEBANK
    empty = [i for i, (t, _) in enumerate(rows) if not t]
    if empty:
        raise FinsentError(f"{path}: row {empty[0] + 1} has an empty text")
    both, dups, conflicts = deduplicate(test + rows)  # an official test row wins over its copies in train
    test_keys = {normalise(t) for t, _ in test}
    kept_test = [row for row in both if normalise(row[0]) in test_keys]
    kept = [row for row in both if normalise(row[0]) not in test_keys]
    source = {
        "name": name,
        "path": str(path.resolve()),
        "sha256": digest,
        "format": kind,
        "agreement": agreement if kind == "phrasebank" else None,
        "n_raw": len(rows) + len(test),
        "duplicates_removed": dups,
        "conflicts_removed": conflicts,
        "official_test": len(kept_test) if test else None,
        "label_counts": dict(Counter(LABELS[label] for _, label in kept_test + kept)),
    }
    both = kept_test + kept
    fixed = ["test"] * len(kept_test) + [None] * len(kept)  # official test rows first
    return LabelledData([t for t, _ in both], [lab for _, lab in both], source, [name] * len(both), fixed)


def _digest(path: Path) -> str:
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return sha256_of(files[0]) if len(files) == 1 else ";".join(sha256_of(p) for p in files)


def load_data(
    data_path,
    agreement: str = "all",
    text_column: str = "text",
    label_column: str = "label",
) -> LabelledData:
    """Read one or more sources (PhraseBank zip/folder/txt, 'financial_phrasebank' from the hub, a corpus name or
    folder, a user table, or a mix file naming several with caps and weights) into one labelled set: duplicates removed
    across sources (official test rows win), each row tagged with its source."""
    if str(agreement).lower() not in AGREEMENT_FILES:
        raise FinsentError(f"--agreement {agreement!r}: expected one of {', '.join(AGREEMENT_FILES)}")
    agreement = str(agreement).lower()
    entries, mix = [], {}
    for spec in _as_list(data_path):
        path = Path(str(spec)).expanduser()
        if path.is_file() and _is_mix(path):
            for entry in read_mix(path):
                entries.append((entry.get("path") or entry["name"], str(entry.get("agreement", agreement)).lower()))
                mix[entries[-1][0]] = {k: entry[k] for k in ("cap", "weight") if k in entry}
        else:
            entries.append((spec, agreement))
    parts = [load_source(spec, agr, text_column, label_column) for spec, agr in entries]
    names = [p.source["name"] for p in parts]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise FinsentError(f"--data_path: the source {twice!r} is given twice; give each corpus once")
    caps = {p.source["name"]: mix.get(spec, {}) for p, (spec, _) in zip(parts, entries)}
    return parts[0] if len(parts) == 1 and not any(caps.values()) else combine(parts, caps)


def combine(parts: list[LabelledData], mix: dict[str, dict]) -> LabelledData:
    """Pool several sources; a text in two sources is kept once (official test rows first, then in the given order),
    and dropped where the sources disagree on its label."""
    rows = []
    for want_test in (True, False):  # official test rows first, then the sources in the given order
        for p in parts:
            rows += [
                (t, lab, p.sources[j], p.fixed[j])
                for j, (t, lab) in enumerate(zip(p.texts, p.labels))
                if (p.fixed[j] == "test") == want_test
            ]
    keys = [normalise(t) for t, *_ in rows]
    labels_of: dict[str, set[int]] = {}
    for k, (_, lab, *_) in zip(keys, rows):
        labels_of.setdefault(k, set()).add(lab)
    seen: set[str] = set()
    kept = []
    for k, row in zip(keys, rows):
        if len(labels_of[k]) > 1 or k in seen:
            continue
        seen.add(k)
        kept.append(row)
    conflicts = sum(1 for v in labels_of.values() if len(v) > 1)
    conflict_rows = sum(1 for k in keys if len(labels_of[k]) > 1)
    source = {
        "name": "+".join(p.source["name"] for p in parts),
        "path": [p.source["path"] for p in parts],
        "format": "mix",
        "agreement": next((p.source["agreement"] for p in parts if p.source.get("agreement")), None),
        "sources": [{**p.source, **mix.get(p.source["name"], {})} for p in parts],
        "n_raw": sum(p.source["n_raw"] for p in parts),
        "sha256": ";".join(p.source["sha256"] for p in parts),
        "duplicates_removed": sum(p.source["duplicates_removed"] for p in parts)
        + len(rows)
        - len(kept)
        - conflict_rows,
        "conflicts_removed": sum(p.source["conflicts_removed"] for p in parts) + conflicts,
        "label_counts": dict(Counter(LABELS[r[1]] for r in kept)),
        "mix": {k: v for k, v in mix.items() if v},
    }
    return LabelledData([r[0] for r in kept], [r[1] for r in kept], source, [r[2] for r in kept], [r[3] for r in kept])


def _read_entity_table(path: Path, text_column: str, label_column: str, entity_column: str) -> list:
    """A user table of (text, entity, label) rows, one record per text."""
    hint = "set --text_column/--entity_column/--label_column"
    out = []
    for row in read_rows(path, (text_column, entity_column, label_column), hint):
        for col in (text_column, entity_column, label_column):
            if col not in row.fields:
                raise FinsentError(f"{row.where}: missing field {col!r}; {hint}")
        text, entity = (
            str(row.fields[text_column] or "").strip(),
            " ".join(str(row.fields[entity_column] or "").split()),
        )
        if not entity:
            raise FinsentError(f"{row.where}: empty {entity_column!r}; every row needs the entity its label is for")
        out.append((text, [(entity, _parse_label(str(row.fields[label_column] or ""), row.where))]))
    if not out:
        raise FinsentError(f"{path}: no rows found")
    return out


def _entity_records(spec, text_column: str, label_column: str, entity_column: str) -> tuple[list, dict]:
    """One entity source's records (text, [(entity, label)]) and what describes it (name, path, digest, format)."""
    name, path = _resolve(spec)
    if path.is_file() and _is_mix(path):
        raise FinsentError(f"{path}: mix files are for sentence-level runs; give the entity corpora as --data_path")
    corpus = corpora.recognise(path)
    if corpus is not None and corpus.name in corpora.ENTITY_READERS:
        records = corpora.ENTITY_READERS[corpus.name](path)
        return records, {
            "name": corpus.name,
            "path": str(path.resolve()),
            "sha256": _digest(path),
            "format": corpus.name,
        }
    if path.is_file() and table_format(path) in TABLE_FORMATS:
        records = _read_entity_table(path, text_column, label_column, entity_column)
        name = name or tables.base_name(path.name)
        return records, {"name": name, "path": str(path.resolve()), "sha256": sha256_of(path), "format": "table"}
    known = ", ".join(corpora.ENTITY_READERS)
    raise FinsentError(
        f"{path}: no entity labels in it; --task entity reads {known} or a table with text, entity and label columns"
    )


def _entity_source(records: list, about: dict, seen_texts: set[str]) -> LabelledData:
    """One entity source's rows: a pair once, conflicting pairs dropped, texts of earlier sources skipped."""
    labels_of: dict[tuple[str, str], set[int]] = {}
    for text, pairs in records:
        for entity, label in pairs:
            labels_of.setdefault((normalise(text), normalise(entity)), set()).add(label)
    rows, kept, dropped_texts = [], set(), set()
    for text, pairs in records:
        if not text or normalise(text) in seen_texts:
            dropped_texts.add(normalise(text))
            continue
        for entity, label in pairs:
            key = (normalise(text), normalise(entity))
            if entity and len(labels_of[key]) == 1 and key not in kept:
                kept.add(key)
                rows.append((text, entity, label))
    n_raw = sum(len(p) for _, p in records)
    conflicts = sum(len(v) > 1 for v in labels_of.values())
    source = {
        **about,
        "agreement": None,
        "n_raw": n_raw,
        "duplicates_removed": n_raw - len(rows) - conflicts,
        "conflicts_removed": conflicts,
        "texts_in_earlier_sources": len(dropped_texts - {""}),
        "label_counts": dict(Counter(LABELS[r[2]] for r in rows)),
    }
    texts, entities, labels = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    return LabelledData(texts, labels, source, [about["name"]] * len(rows), None, entities)


def load_entity_data(
    data_path, text_column: str = "text", label_column: str = "label", entity_column: str = "entity"
) -> LabelledData:
    """Entity-level data: one row per (text, entity) with the entity's label, from SEntFiN, FinEntity or user tables
    with an entity column. A pair labelled twice differently is dropped, a repeated pair kept once, and a text found
    in an earlier source is not read again from a later one (so no text can reach two splits)."""
    parts, seen_texts = [], set()
    for spec in _as_list(data_path):
        part = _entity_source(*_entity_records(spec, text_column, label_column, entity_column), seen_texts)
        seen_texts |= {normalise(t) for t in part.texts}
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    source = {
        "name": "+".join(p.source["name"] for p in parts),
        "path": [p.source["path"] for p in parts],
        "format": "mix",
        "agreement": None,
        "sources": [p.source for p in parts],
        "sha256": ";".join(p.source["sha256"] for p in parts),
        **{k: sum(p.source[k] for p in parts) for k in ("n_raw", "duplicates_removed", "conflicts_removed")},
        "label_counts": dict(Counter(LABELS[lab] for p in parts for lab in p.labels)),
        "mix": {},
    }
    return LabelledData(
        sum((p.texts for p in parts), []),
        sum((p.labels for p in parts), []),
        source,
        sum((p.sources for p in parts), []),
        None,
        sum((p.entities for p in parts), []),
    )


def describe(data: LabelledData) -> str:
    """Where the data came from, in one phrase: the path, or each source with its row count."""
    if data.source.get("format") != "mix":
        return str(data.source["path"])
    return ", ".join(f"{name} ({data.sources.count(name):,})" for name in data.source_names)


def corpus_rows(explicit: str | Path | None = None) -> list[dict]:
    """`finsent data list`: each known corpus, where it was found, its sentence-level rows and label counts."""
    rows = []
    for corpus in corpora.CORPORA:
        try:
            where = corpora.find(corpus.name, explicit)
        except FinsentError:
            rows.append(
                {
                    "name": corpus.name,
                    "texts": corpus.kind,
                    "found": "no",
                    "rows": "",
                    "labels": "",
                    "licence": corpus.licence,
                }
            )
            continue
        data = load_data([str(where)])
        counts = data.source["label_counts"]
        rows.append(
            {
                "name": corpus.name,
                "texts": corpus.kind,
                "found": str(where),
                "rows": f"{len(data):,}"
                + (" (test: official)" if corpus.official_test else "")
                + (" (AllAgree; --agreement)" if corpus.name == corpora.PHRASEBANK else ""),
                "labels": " / ".join(f"{counts.get(k, 0)} {k[:3]}" for k in ("negative", "neutral", "positive")),
                "licence": corpus.licence,
            }
        )
    return rows
