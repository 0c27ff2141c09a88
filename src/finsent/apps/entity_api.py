"""The server's entity-level requests: items of (text, entities) in, one prediction per (item, entity) out.

Each pair becomes the one string the run's model reads (`finsent.data.entities.entity_input`) and is scored through
the server's batcher like any sentence; a body of the other task's shape is a 422 that says what to send.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from pydantic import BaseModel

from finsent.apps.bodies import body_error, validate_request
from finsent.apps.schemas import EntityRequest, EntityResponse, PredictRequest, PredictResponse
from finsent.data.entities import ENTITY, SENTENCE, EntityFormat, entity_input
from finsent.data.watchlist import Pair, given_pairs

ITEMS_EXAMPLE = '{"items": [{"text": "...", "entities": ["..."]}]}'


def task(predictor) -> str:
    """The served run's task: sentence or entity."""
    return getattr(predictor.info, "task", SENTENCE) or SENTENCE


def request_model(predictor) -> type[BaseModel]:
    return EntityRequest if task(predictor) == ENTITY else PredictRequest


def response_model(predictor) -> type[BaseModel]:
    return EntityResponse if task(predictor) == ENTITY else PredictResponse


def _wrong_shape(predictor, data: Any) -> str | None:
    """The message for a body shaped for the other task, else None."""
    if not isinstance(data, dict):
        return None
    version = predictor.info.version
    if task(predictor) == ENTITY and "texts" in data and "items" not in data:
        return (
            f"this server runs an entity-level model ({version}): send {ITEMS_EXAMPLE}, one prediction per "
            "(text, entity); a bare texts list names no entities"
        )
    if task(predictor) == SENTENCE and "items" in data and "texts" not in data:
        return (
            f'this server runs a sentence-level model ({version}): send {{"texts": ["..."]}}; items with entities '
            "need an entity-level run (finsent train --task entity)"
        )
    return None


def read_json(predictor, data: Any) -> tuple[list[str], list[Pair] | None]:
    """The model inputs of a parsed JSON body and, for an entity run, the (item, entity) pairs they came from."""
    message = _wrong_shape(predictor, data)
    if message:
        raise body_error("wrong_task", message)
    if task(predictor) != ENTITY:
        return validate_request(data).texts, None
    request = validate_request(data, EntityRequest)
    fmt = EntityFormat.from_json(predictor.info.entity_input)
    pairs = [p for i, item in enumerate(request.items) for p in given_pairs(i, item.text, item.entities)]
    return [entity_input(p.text, p.entity, fmt, p.spans) for p in pairs], pairs


def refuse_csv(predictor) -> None:
    """text/csv holds sentences only: a 422 for an entity run."""
    if task(predictor) == ENTITY:
        raise body_error(
            "wrong_task",
            f"this server runs an entity-level model ({predictor.info.version}): text/csv names no entities; "
            f"send application/json {ITEMS_EXAMPLE}",
        )


def sentence_only(predictor, route: str) -> None:
    """A 422 for a route that scores plain sentences when the run is entity-level."""
    if task(predictor) == ENTITY:
        raise body_error(
            "wrong_task",
            f"this server runs an entity-level model ({predictor.info.version}); {route} scores plain sentences and "
            "needs a sentence-level run; use POST /predict with items",
        )


def pair_predictions(pairs: list[Pair], predictions: list[dict]) -> list[dict]:
    """One answer per pair: the item's index, the entity, its first mention where found, then the prediction."""
    out = []
    for pair, prediction in zip(pairs, predictions):
        found = {} if pair.start is None else {"mention": pair.mention, "start": pair.start, "end": pair.end}
        out.append({"item": pair.row, "entity": pair.entity, **found, **prediction})
    return out


def pairs_csv(predictions: list[dict], labels: list[str]) -> str:
    """item, entity, label, confidence, then one probability per label; one row per pair, no header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for p in predictions:
        writer.writerow(
            [p["item"], p["entity"], p["label"], p["confidence"], *(p["probabilities"][label] for label in labels)]
        )
    return out.getvalue()
