"""The HTTP API's request and response models (pydantic)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from finsent.core.text import is_valid_unicode
from finsent.documents.analysis import MAX_DOCUMENT_CHARS, MAX_QUESTION_CHARS, MAX_QUESTIONS, MAX_TOP_K


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


MAX_TEXTS = 1000
MAX_TEXT_CHARS = 10_000


class PredictRequest(BaseModel):
    """A batch of sentences to score."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "texts": [
                        "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn .",
                        "The company expects sales to fall .",
                    ]
                }
            ]
        },
    )

    texts: Annotated[
        list[StrictStr],
        Field(
            min_length=1,
            max_length=MAX_TEXTS,
            description=f"1 to {MAX_TEXTS} non-empty strings of at most {MAX_TEXT_CHARS} characters; texts longer than the model's max length in tokens are truncated and flagged",
        ),
    ]

    @field_validator("texts")
    @classmethod
    def _non_empty(cls, texts: list[str]) -> list[str]:
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty; every text needs at least one non-space character")
            if not is_valid_unicode(text):
                raise ValueError(f"texts[{i}] is not valid Unicode (a lone surrogate escape)")
            if len(text) > MAX_TEXT_CHARS:
                raise ValueError(f"texts[{i}] has {len(text)} characters; at most {MAX_TEXT_CHARS} are accepted")
        return texts


class Prediction(BaseModel):
    label: str
    confidence: float = Field(description="probability of the predicted label")
    probabilities: dict[str, float] = Field(description="one calibrated probability per label")
    truncated: bool = Field(description="the text was longer than the model's max length and was cut")
    answered_by: str | None = Field(
        default=None, description="with --cascade or --early_exit only: the model or layer that answered"
    )


class PredictResponse(BaseModel):
    model_version: str
    backend: str
    predictions: list[Prediction]


MAX_ENTITIES = 50  # per item
MAX_ENTITY_CHARS = 200


class EntityItem(BaseModel):
    """One text and the entities to score in it."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
    entities: Annotated[
        list[StrictStr],
        Field(min_length=1, max_length=MAX_ENTITIES, description="the entities (companies, people, ...) to score"),
    ]

    @field_validator("text")
    @classmethod
    def _text(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is empty; every item needs a text with at least one non-space character")
        if not is_valid_unicode(text):
            raise ValueError("text is not valid Unicode (a lone surrogate escape)")
        return text

    @field_validator("entities")
    @classmethod
    def _entities(cls, entities: list[str]) -> list[str]:
        for i, entity in enumerate(entities):
            if not entity.strip():
                raise ValueError(f"entities[{i}] is empty; name each entity")
            if not is_valid_unicode(entity) or len(entity) > MAX_ENTITY_CHARS:
                raise ValueError(f"entities[{i}] is not valid Unicode or longer than {MAX_ENTITY_CHARS} characters")
        return entities


class EntityRequest(BaseModel):
    """An entity-level run's batch: texts with the entities to score in each, one prediction per (text, entity)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"items": [{"text": "Tesla shares jump as Ford cuts guidance", "entities": ["Tesla", "Ford"]}]}
            ]
        },
    )

    items: Annotated[
        list[EntityItem],
        Field(min_length=1, max_length=MAX_TEXTS, description=f"at most {MAX_TEXTS} (text, entity) pairs in all"),
    ]

    @model_validator(mode="after")
    def _pairs(self) -> EntityRequest:
        n = sum(len(set(item.entities)) for item in self.items)
        if n > MAX_TEXTS:
            raise ValueError(f"{n} (text, entity) pairs; at most {MAX_TEXTS} are accepted per request")
        return self


class EntityPrediction(Prediction):
    item: int = Field(description="the index of the item in the request")
    entity: str
    mention: str | None = Field(default=None, description="the entity as written in the text; absent if not found")
    start: int | None = Field(default=None, description="character offset of the first mention")
    end: int | None = None


class EntityResponse(BaseModel):
    model_version: str
    backend: str
    predictions: list[EntityPrediction]
