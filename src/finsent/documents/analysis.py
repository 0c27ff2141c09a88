"""Document analysis: sentence scores aggregated per section and document, evidence for questions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from finsent.core.errors import FinsentError
from finsent.documents.extraction import Document, from_markdown
from finsent.documents.segmentation import Sentence, model_text, sentences

# A document or section is positive when its score (mean P(positive) - P(negative) over its sentences) is at least
# NEUTRAL_BAND, negative when it is at most -NEUTRAL_BAND, neutral in between.
NEUTRAL_BAND = 0.1
MAX_DOCUMENT_CHARS = 200_000  # POST /analyze
MAX_QUESTIONS = 20
MAX_QUESTION_CHARS = 1_000
MAX_TOP_K = 50


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
    from finsent.inference.predictor import Scores

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
    from finsent.documents.retrieval import top_k_rows

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


def require_sentence_run(predictor, what: str = "") -> None:
    """One line where an entity-level run is asked to score bare sentences (it reads (text, entity) pairs)."""
    info = getattr(predictor, "info", None)
    if str(getattr(info, "task", None) or "sentence") != "sentence":
        needs = (
            f"{what} needs a sentence-level run"
            if what
            else "give a watchlist of the entities to score (finsent analyze --entities watchlist.csv), or use a "
            "sentence-level run"
        )
        raise FinsentError(f"model {info.version} is an entity-level run: {needs}")


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
    """The whole report of prepared documents: scored sentence by sentence, aggregated, and the questions answered
    (an entity run scores documents per watchlist entity: documents.entities.analyze_entities)."""
    check_questions(questions, top_k)
    require_sentence_run(predictor)
    reports = []
    for doc, sents in docs:
        scores = predictor.score([model_text(doc.text[s.start : s.end]) for s in sents])
        reports.append(analyze_document(doc, sents, scores.probs, scores.labels))
    if questions:
        if encoder is None:
            from finsent.documents.retrieval import default_encoder

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
    require_sentence_run(predictor, "--index")
    if encoder is None:
        from finsent.documents.retrieval import default_encoder

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
