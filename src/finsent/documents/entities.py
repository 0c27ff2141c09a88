"""Entity-level document analysis: each sentence paired with the watchlist entities it names, each pair scored by an
entity run, and per-entity aggregates across the documents (mentions, score, label counts, strongest evidence).

A pair is one (sentence, entity): a sentence naming an entity twice is scored once, with both mentions marked, and
counts as one mention of it. The model reads `entity_input(sentence, entity, fmt, spans)`, as every scoring path does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from finsent.core.errors import FinsentError
from finsent.data.entities import ENTITY, EntityFormat, entity_input
from finsent.data.watchlist import Pair, Watchlist, watchlist_pairs
from finsent.documents.analysis import NEUTRAL_BAND, aggregate, polarity
from finsent.documents.extraction import Document
from finsent.documents.segmentation import Sentence, model_text

EVIDENCE = 3  # the strongest sentences (highest |P(positive) - P(negative)|) kept per entity


def run_task(predictor) -> str:
    """The task of a predictor's run ("sentence" where its info does not say)."""
    return str(getattr(getattr(predictor, "info", None), "task", None) or "sentence")


def raw_positions(raw: str) -> list[int]:
    """For each character of model_text(raw), its index in raw (a joining space: the whitespace before the word)."""
    out: list[int] = []
    for k, word in enumerate(re.finditer(r"\S+", raw)):
        if k:
            out.append(word.start() - 1)
        out.extend(range(word.start(), word.end()))
    return out


def sentence_pairs(doc: Document, i: int, sent: Sentence, watchlist: Watchlist) -> list[tuple[Pair, list[list[int]]]]:
    """The pairs of one sentence (found in the text the model reads) with their mentions' spans in the document."""
    raw = doc.text[sent.start : sent.end]
    where = raw_positions(raw)
    out = []
    for pair in watchlist_pairs(i, model_text(raw), watchlist):
        spans = [[sent.start + where[s], sent.start + where[e - 1] + 1] for s, e in pair.spans or ()]
        out.append((pair, spans))
    return out


def pair_row(doc: Document, sent: Sentence, pair: Pair, spans: list[list[int]], record: dict, score: float) -> dict:
    """One scored pair of the report: the sentence (text, offsets, section), the entity and its mentions, the scores."""
    return {
        "entity": pair.entity,
        "mention": pair.mention,
        "text": doc.text[sent.start : sent.end],
        "start": sent.start,
        "end": sent.end,
        "section": sent.section,
        "spans": spans,
        "label": record["label"],
        "confidence": record["confidence"],
        "probabilities": record["probabilities"],
        "score": round(float(score), 6),
    }


def score_document(predictor, fmt: EntityFormat, doc: Document, sents: Sequence[Sentence], watchlist: Watchlist):
    """The document's scored pairs (in reading order) and their probabilities."""
    found = [
        (sent, pair, spans) for i, sent in enumerate(sents) for pair, spans in sentence_pairs(doc, i, sent, watchlist)
    ]
    labels = tuple(predictor.labels)
    if not found:
        return [], np.zeros((0, len(labels)))
    scores = predictor.score([entity_input(p.text, p.entity, fmt, p.spans) for _, p, _ in found])
    records = scores.records()
    polar = polarity(scores.probs, scores.labels)
    rows = [pair_row(doc, s, p, spans, r, v) for (s, p, spans), r, v in zip(found, records, polar)]
    return rows, scores.probs


def entity_aggregates(rows: Sequence[dict], probs: np.ndarray, labels: Sequence[str]) -> dict[str, dict]:
    """Per entity (most mentioned first, then by name): mentions and the aggregate of its pairs' probabilities."""
    by_entity: dict[str, list[int]] = {}
    for k, row in enumerate(rows):
        by_entity.setdefault(row["entity"], []).append(k)
    order = sorted(by_entity, key=lambda e: (-len(by_entity[e]), e.casefold()))
    return {e: {"entity": e, "mentions": len(by_entity[e]), **aggregate(probs[by_entity[e]], labels)} for e in order}


def strongest(rows: Sequence[dict], k: int = EVIDENCE) -> list[dict]:
    """The k pairs with the highest |score|, the more confident first on a tie."""
    return sorted(rows, key=lambda r: (-abs(r["score"]), -r["confidence"]))[:k]


def document_report(doc: Document, sents: Sequence[Sentence], rows: list[dict], probs, labels) -> dict:
    """One document of an entity report: its sections and sentences, its scored pairs and its entities."""
    used = sorted({s.section for s in sents})
    renumber = {old: new for new, old in enumerate(used)}
    for row in rows:
        row["section"] = renumber[row["section"]]
    return {
        "source": doc.source,
        "sections": [
            {"title": doc.sections[i].title, "start": doc.sections[i].start, "end": doc.sections[i].end} for i in used
        ],
        "sentences": [
            {"text": doc.text[s.start : s.end], "start": s.start, "end": s.end, "section": renumber[s.section]}
            for s in sents
        ],
        "pairs": rows,
        "entities": list(entity_aggregates(rows, probs, labels).values()),
        "text": doc.text,
    }


def check_entity_run(predictor, watchlist: Watchlist | None) -> EntityFormat:
    """The run's entity input format; one line when the run or the watchlist is missing for entity analysis."""
    version = getattr(getattr(predictor, "info", None), "version", "?")
    if run_task(predictor) != ENTITY:
        raise FinsentError(
            f"model {version} is a sentence-level run: a watchlist (--entities) needs an entity-level run "
            "(finsent train --task entity); leave out --entities to score sentences"
        )
    if watchlist is None:
        raise FinsentError(
            f"model {version} is an entity-level run: give a watchlist of the entities to find "
            "(finsent analyze --entities watchlist.csv), or use a sentence-level run"
        )
    return EntityFormat.from_json(predictor.info.entity_input)


def analyze_entities(
    predictor, docs: Sequence[tuple[Document, Sequence[Sentence]]], watchlist: Watchlist | None
) -> dict:
    """The entity report of prepared documents: every (sentence, watchlist entity) pair scored, per-entity aggregates
    within each document and across all of them, with each entity's strongest evidence sentences."""
    fmt = check_entity_run(predictor, watchlist)
    labels = tuple(predictor.labels)
    reports, every, all_probs = [], [], []
    for doc, sents in docs:
        rows, probs = score_document(predictor, fmt, doc, sents, watchlist)
        reports.append(document_report(doc, sents, rows, probs, labels))
        titles = [sec["title"] for sec in reports[-1]["sections"]]
        every += [{**row, "source": doc.source, "section_title": titles[row["section"]]} for row in rows]
        all_probs.append(probs)
    probs = np.concatenate(all_probs) if all_probs else np.zeros((0, len(labels)))
    entities = list(entity_aggregates(every, probs, labels).values())
    for agg in entities:
        mine = [row for row in every if row["entity"] == agg["entity"]]
        agg["documents"] = len({row["source"] for row in mine})
        agg["evidence"] = strongest(mine)
    mentioned = {agg["entity"] for agg in entities}
    return {
        "model_version": predictor.info.version,
        "task": ENTITY,
        "neutral_band": NEUTRAL_BAND,
        "watchlist": len(watchlist.names),
        "entities": entities,
        "not_mentioned": [name for name in watchlist.names if name not in mentioned],
        "documents": reports,
    }
