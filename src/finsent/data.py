"""Load Financial PhraseBank or user data, de-duplicate, and split without leakage."""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from finsent.errors import FinsentError
from finsent.tables import TABLE_FORMATS, read_rows, table_format

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
LABEL2ID = {name: i for i, name in enumerate(LABELS)}
AGREEMENT_FILES = {
    "50": "Sentences_50Agree.txt",
    "66": "Sentences_66Agree.txt",
    "75": "Sentences_75Agree.txt",
    "all": "Sentences_AllAgree.txt",
}
HUB_DATASET = "takala/financial_phrasebank"
HUB_FILE = "data/FinancialPhraseBank-v1.0.zip"


@dataclass
class LabelledData:
    """Sentences with integer labels plus where they came from and what was cleaned."""

    texts: list[str]
    labels: list[int]
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> LabelledData:
        return LabelledData([self.texts[i] for i in idx], [self.labels[i] for i in idx], self.source)


@dataclass
class Splits:
    train: LabelledData
    val: LabelledData
    test: LabelledData


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


def deduplicate(rows: list[tuple[str, int]]) -> tuple[list[tuple[str, int]], int, int]:
    """Drop exact duplicate sentences; drop sentences seen with conflicting labels. Keep first-seen order."""
    labels_of: dict[str, set[int]] = {}
    for text, label in rows:
        labels_of.setdefault(text, set()).add(label)
    conflicts = {t for t, ls in labels_of.items() if len(ls) > 1}
    seen: set[str] = set()
    kept = []
    for text, label in rows:
        if text in conflicts or text in seen:
            continue
        seen.add(text)
        kept.append((text, label))
    n_conflict_rows = sum(1 for t, _ in rows if t in conflicts)
    duplicates_removed = len(rows) - len(kept) - n_conflict_rows
    return kept, duplicates_removed, len(conflicts)


def load_data(
    data_path: str | Path,
    agreement: str = "all",
    text_column: str = "text",
    label_column: str = "label",
) -> LabelledData:
    """Read PhraseBank (zip, folder, Sentences_*.txt, or 'financial_phrasebank' from the hub) or a user table."""
    if str(agreement).lower() not in AGREEMENT_FILES:
        raise FinsentError(f"--agreement {agreement!r}: expected one of {', '.join(AGREEMENT_FILES)}")
    agreement = str(agreement).lower()
    if str(data_path) == "financial_phrasebank":
        path = _download_from_hub()
    else:
        path = Path(data_path).expanduser()
    if not path.exists():
        raise FinsentError(
            f"{path}: no such file or folder; pass --data_path pointing at FinancialPhraseBank-v1.0.zip, a Sentences_*.txt, or a CSV/JSONL"
        )
    if path.is_file() and path.stat().st_size == 0:
        raise FinsentError(f"{path}: the file is empty")
    if path.is_file() and table_format(path) in TABLE_FORMATS:
        rows, digest, kind = _read_table(path, text_column, label_column), sha256_of(path), "table"
    else:
        (rows, digest), kind = _read_phrasebank(path, agreement), "phrasebank"
    empty = [i for i, (t, _) in enumerate(rows) if not t]
    if empty:
        raise FinsentError(f"{path}: row {empty[0] + 1} has an empty text")
    kept, dups, conflicts = deduplicate(rows)
    source = {
        "path": str(path.resolve()),
        "sha256": digest,
        "format": kind,
        "agreement": agreement if kind == "phrasebank" else None,
        "n_raw": len(rows),
        "duplicates_removed": dups,
        "conflicts_removed": conflicts,
        "label_counts": dict(Counter(LABELS[label] for _, label in kept)),
    }
    return LabelledData([t for t, _ in kept], [label for _, label in kept], source)


def split_data(data: LabelledData, seed: int, val_size: float = 0.1, test_size: float = 0.1) -> Splits:
    """Stratified train/val/test split (80/10/10 by default), checked for leakage."""
    from sklearn.model_selection import train_test_split

    idx = list(range(len(data)))
    try:
        rest, test_idx = train_test_split(idx, test_size=test_size, stratify=data.labels, random_state=seed)
        rest_labels = [data.labels[i] for i in rest]
        train_idx, val_idx = train_test_split(
            rest, test_size=val_size / (1 - test_size), stratify=rest_labels, random_state=seed
        )
    except ValueError as e:
        raise FinsentError(
            f"{data.source.get('path')}: cannot make a stratified split ({e}); every label needs at least a few sentences"
        ) from None
    splits = Splits(data.subset(sorted(train_idx)), data.subset(sorted(val_idx)), data.subset(sorted(test_idx)))
    check_no_leakage(splits)
    return splits


def add_to_train(splits: Splits, extra: LabelledData) -> tuple[Splits, int]:
    """Add extra labelled sentences to train, minus every validation/test sentence and those already in train."""
    held = set(splits.val.texts) | set(splits.test.texts) | set(splits.train.texts)
    keep = [i for i, t in enumerate(extra.texts) if t not in held]
    train = LabelledData(
        splits.train.texts + [extra.texts[i] for i in keep],
        splits.train.labels + [extra.labels[i] for i in keep],
        splits.train.source,
    )
    return Splits(train, splits.val, splits.test), len(keep)


def check_no_leakage(splits: Splits) -> None:
    """Fail loudly if any validation or test sentence is also in train."""
    train = set(splits.train.texts)
    for name, part in (("validation", splits.val), ("test", splits.test)):
        leaked = train.intersection(part.texts)
        if leaked:
            raise RuntimeError(f"{len(leaked)} {name} sentences also appear in train, e.g. {next(iter(leaked))!r}")
