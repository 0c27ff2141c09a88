"""Labelled data and its seeded, stratified train / validation / test splits, with the leakage check."""

from __future__ import annotations

from dataclasses import dataclass, field

from finsent.core.errors import FinsentError
from finsent.data.entities import MIXED, EntityFormat, entity_inputs


@dataclass
class LabelledData:
    """Sentences with integer labels plus where they came from and what was cleaned."""

    texts: list[str]
    labels: list[int]
    source: dict = field(default_factory=dict)
    sources: list[str] | None = None  # each row's source name (default: the one source's)
    fixed: list[str | None] | None = None  # "test" for rows of a corpus's official test split
    entities: list[str] | None = None  # an entity-level set: each row's entity (the label is the entity's)

    def __post_init__(self) -> None:
        if self.sources is None:
            self.sources = [self.source.get("name", "data")] * len(self.texts)
        if self.fixed is None:
            self.fixed = [None] * len(self.texts)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> LabelledData:
        idx = list(idx)
        return LabelledData(
            [self.texts[i] for i in idx],
            [self.labels[i] for i in idx],
            self.source,
            [self.sources[i] for i in idx],
            [self.fixed[i] for i in idx],
            None if self.entities is None else [self.entities[i] for i in idx],
        )

    def inputs(self, fmt=None) -> list[str]:
        """What the model reads: the texts, or for an entity-level set each (text, entity) pair as one string."""
        if self.entities is None:
            return self.texts
        return entity_inputs(self.texts, self.entities, fmt or EntityFormat())

    @property
    def source_names(self) -> list[str]:
        """The sources in order of first appearance."""
        return list(dict.fromkeys(self.sources))


@dataclass
class Splits:
    train: LabelledData
    val: LabelledData
    test: LabelledData


def normalise(text: str) -> str:
    """The key two texts share when they are the same sentence: case and whitespace aside."""
    return " ".join(text.split()).casefold()


def deduplicate(rows: list[tuple[str, int]]) -> tuple[list[tuple[str, int]], int, int]:
    """Drop duplicate sentences (the same up to case and whitespace); drop sentences seen with conflicting labels.
    Keep first-seen order."""
    labels_of: dict[str, set[int]] = {}
    for text, label in rows:
        labels_of.setdefault(normalise(text), set()).add(label)
    conflicts = {k for k, ls in labels_of.items() if len(ls) > 1}
    seen: set[str] = set()
    kept = []
    for text, label in rows:
        key = normalise(text)
        if key in conflicts or key in seen:
            continue
        seen.add(key)
        kept.append((text, label))
    n_conflict_rows = sum(1 for t, _ in rows if normalise(t) in conflicts)
    duplicates_removed = len(rows) - len(kept) - n_conflict_rows
    return kept, duplicates_removed, len(conflicts)


def _split_one(data: LabelledData, idx: list[int], seed: int, val_size: float, test_size: float):
    """Stratified train/val/test indices of one source; its official test rows (if any) are its test split, and
    validation is then drawn from the rest. An entity-level set is split by text (a text's entities stay together)."""
    from sklearn.model_selection import train_test_split

    if data.entities is not None:
        return _split_by_text(data, idx, seed, val_size, test_size)
    fixed_test = [i for i in idx if data.fixed[i] == "test"]
    rest = [i for i in idx if data.fixed[i] != "test"]
    name = data.sources[idx[0]]
    try:
        if not fixed_test:
            rest, fixed_test = train_test_split(
                rest, test_size=test_size, stratify=[data.labels[i] for i in rest], random_state=seed
            )
            val_share = val_size / (1 - test_size)
        else:
            val_share = val_size
        train, val = train_test_split(
            rest, test_size=val_share, stratify=[data.labels[i] for i in rest], random_state=seed
        )
    except ValueError as e:
        where = data.source.get("path") if len(data.source_names) == 1 else name
        raise FinsentError(
            f"{where}: cannot make a stratified split ({e}); every label needs at least a few sentences"
        ) from None
    return train, val, fixed_test


def _split_by_text(data: LabelledData, idx: list[int], seed: int, val_size: float, test_size: float):
    """Split the texts of one entity-level source 80/10/10, stratified by the text's label (or 'mixed' where its
    entities disagree), then expand each text to its entity rows."""
    groups: dict[str, list[int]] = {}
    for i in idx:
        groups.setdefault(normalise(data.texts[i]), []).append(i)
    keys = list(groups)
    strata = {k: _text_stratum([data.labels[i] for i in groups[k]]) for k in keys}
    grouped = LabelledData(keys, [strata[k] for k in keys], data.source, [data.sources[idx[0]]] * len(keys))
    parts = _split_one(grouped, list(range(len(keys))), seed, val_size, test_size)
    return tuple(sorted(i for g in part for i in groups[keys[g]]) for part in parts)


def _text_stratum(labels: list[int]) -> int:
    return labels[0] if len(set(labels)) == 1 else MIXED


def _weighted(train: list[int], data: LabelledData, mix: dict, seed: int) -> list[int]:
    """Apply each source's cap (at most N training rows, drawn by seed) and weight (rows repeated, the fraction drawn)."""
    import random

    rng = random.Random(seed)
    out = []
    for name in data.source_names:
        rows = [i for i in train if data.sources[i] == name]
        rule = mix.get(name, {})
        if rule.get("cap") and len(rows) > rule["cap"]:
            rows = sorted(rng.sample(rows, int(rule["cap"])))
        weight = float(rule.get("weight", 1.0))
        whole, frac = int(weight), weight - int(weight)
        out += rows * whole + sorted(rng.sample(rows, round(frac * len(rows))))
    return out


def split_data(data: LabelledData, seed: int, val_size: float = 0.1, test_size: float = 0.1) -> Splits:
    """Stratified train/val/test split per source (80/10/10 by default; a corpus's official test split is kept as
    its test split), caps and weights of a mix applied to train, checked for leakage."""
    parts = ([], [], [])
    for name in data.source_names:
        idx = [i for i, s in enumerate(data.sources) if s == name]
        for whole, part in zip(parts, _split_one(data, idx, seed, val_size, test_size)):
            whole.extend(part)
    train_idx, val_idx, test_idx = (sorted(p) for p in parts)
    train_idx = _weighted(train_idx, data, data.source.get("mix") or {}, seed)
    splits = Splits(data.subset(train_idx), data.subset(val_idx), data.subset(test_idx))
    check_no_leakage(splits)
    return splits


def source_counts(splits: Splits) -> dict[str, dict[str, int]]:
    """n_train, n_val and n_test of each source."""
    names = list(dict.fromkeys(splits.test.sources + splits.val.sources + splits.train.sources))
    return {
        name: {
            f"n_{key}": part.sources.count(name)
            for key, part in (("train", splits.train), ("val", splits.val), ("test", splits.test))
        }
        for name in names
    }


def add_to_train(splits: Splits, extra: LabelledData) -> tuple[Splits, int]:
    """Add extra labelled sentences to train, minus every validation/test sentence and those already in train."""
    held = set(splits.val.texts) | set(splits.test.texts) | set(splits.train.texts)
    keep = [i for i, t in enumerate(extra.texts) if t not in held]
    if splits.train.entities is not None:
        raise FinsentError("extra training sentences are sentence-level; an entity-level run takes none")
    train = LabelledData(
        splits.train.texts + [extra.texts[i] for i in keep],
        splits.train.labels + [extra.labels[i] for i in keep],
        splits.train.source,
        splits.train.sources + [extra.sources[i] for i in keep],
        splits.train.fixed + [None] * len(keep),
    )
    return Splits(train, splits.val, splits.test), len(keep)


def check_no_leakage(splits: Splits) -> None:
    """Fail loudly if any validation or test sentence is also in train, or a test sentence in validation (the same
    sentence up to case and whitespace, from any source)."""
    train = {normalise(t) for t in splits.train.texts}
    val = {normalise(t) for t in splits.val.texts}
    for name, part, seen in (("validation", splits.val, train), ("test", splits.test, train | val)):
        leaked = [t for t in part.texts if normalise(t) in seen]
        if leaked:
            where = "train" if name == "validation" else "train or validation"
            raise RuntimeError(f"{len(leaked)} {name} sentences also appear in {where}, e.g. {leaked[0]!r}")
