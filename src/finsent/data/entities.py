"""Entity-level examples: (text, entity) pairs with the entity's label, and the one way a pair reaches the encoder.

An entity run's model reads one string per pair, built here by `entity_input` and nowhere else, so every scoring path
(PyTorch, ONNX, int8, early exit, distillation, the server's batcher) scores pairs unchanged. Two styles:
- `markers`: each mention of the entity in the text wrapped in « » (single tokens in the BERT and MPNet vocabularies;
  in none of the corpora); an entity the text never names is put in front: `«Tesla» | text`;
- `pair`: the text, the tokenizer's separator token, the entity (a BERT-style sentence pair in one string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from finsent.core.errors import FinsentError
from finsent.data.labels import LABELS

SENTENCE, ENTITY = "sentence", "entity"
TASKS = (SENTENCE, ENTITY)
STYLES = ("markers", "pair")
OPEN, CLOSE = "«", "»"
MIXED = len(LABELS)  # the stratum of texts whose entities carry different labels


@dataclass(frozen=True)
class EntityFormat:
    """How a run turns (text, entity) into the one string its model reads; recorded in finsent_model.json."""

    style: str = "markers"
    sep: str = "[SEP]"  # the `pair` style's separator: the tokenizer's sep token

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise FinsentError(f"entity input style {self.style!r}: expected one of {', '.join(STYLES)}")

    def to_json(self) -> dict:
        return {"style": self.style, "sep": self.sep} if self.style == "pair" else {"style": self.style}

    @classmethod
    def from_json(cls, obj: dict | None) -> EntityFormat:
        obj = obj or {}
        return cls(str(obj.get("style", "markers")), str(obj.get("sep", "[SEP]")))


def mention_pattern(name: str) -> re.Pattern:
    """A name as a case-insensitive pattern on word boundaries (not inside another word; "AT&T" and "$TSLA" whole)."""
    return re.compile(r"(?<![\w$])" + re.escape(name.strip()) + r"(?!\w)", re.IGNORECASE)


def mention_spans(text: str, entity: str) -> list[tuple[int, int]]:
    """Character spans of each mention of the entity in the text (case-insensitive, on word boundaries)."""
    if not entity.strip():
        return []
    return [m.span() for m in mention_pattern(entity).finditer(text)]


def entity_input(text: str, entity: str, fmt: EntityFormat = EntityFormat(), spans=None) -> str:
    """The string the model reads for one (text, entity) pair; `spans` where the mentions are known (a watchlist
    match, an annotated span), else the entity's own mentions are found."""
    entity = " ".join(str(entity).split())
    if fmt.style == "pair":
        return f"{text} {fmt.sep} {entity}"
    spans = sorted(spans if spans is not None else mention_spans(text, entity))
    if not spans:
        return f"{OPEN}{entity}{CLOSE} | {text}"
    out, last = [], 0
    for start, end in spans:
        if start < last:  # overlapping spans: keep the first
            continue
        out += [text[last:start], OPEN, text[start:end], CLOSE]
        last = end
    return "".join(out + [text[last:]])


def entity_inputs(texts, entities, fmt: EntityFormat, spans=None) -> list[str]:
    """`entity_input` over parallel lists."""
    spans = spans if spans is not None else [None] * len(texts)
    return [entity_input(t, e, fmt, s) for t, e, s in zip(texts, entities, spans)]
