"""The HTTP API's request and response models (pydantic)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

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
