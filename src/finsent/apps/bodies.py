"""HTTP request bodies: JSON and CSV decoded with readable 422s, request models validated, CSV answers written."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from finsent.apps.schemas import PredictRequest

BODY_ERRORS = ("utf8_invalid", "json_invalid", "json_too_deep", "wrong_task")
JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv",)


def validation_message(errors: list[dict]) -> str:
    """The first few validation errors as one readable line: field: message; ..."""
    parts = []
    for err in errors[:5]:
        if err.get("type") in BODY_ERRORS:
            parts.append(err["msg"])
            continue
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def body_error(kind: str, message: str) -> RequestValidationError:
    """A 422 about the body as a whole; its message is shown as it is."""
    return RequestValidationError([{"type": kind, "loc": ("body",), "msg": message}])


def decode_utf8(body: bytes) -> str:
    """The body as text (a leading byte-order mark dropped); bytes that are not UTF-8 are a 422 naming the first bad one."""
    try:
        return body.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise body_error(
            "utf8_invalid",
            f"the body is not valid UTF-8 (byte 0x{body[e.start]:02x} at position {e.start}); send UTF-8 encoded text",
        ) from None


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; invalid UTF-8, malformed or over-deep JSON are 422s with a readable message."""
    try:
        return json.loads(decode_utf8(body))
    except json.JSONDecodeError as e:
        raise body_error(
            "json_invalid",
            f'the body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); send {{"texts": ["..."]}} with Content-Type: application/json',
        ) from None
    except RecursionError:
        raise body_error(
            "json_too_deep",
            'the body\'s JSON is nested too deeply to read; send {"texts": ["..."]}, a flat list of strings',
        ) from None


def parse_csv(body: bytes) -> list[str]:
    """One text per line of a text/csv body; a quoted field may hold commas or line breaks, an unquoted line is taken whole."""
    return [",".join(row) for row in csv.reader(io.StringIO(decode_utf8(body), newline=""))]


def validate_request(data: Any, model: type[BaseModel] = PredictRequest) -> BaseModel:
    """Validate parsed input as a request model; errors become the same 422 as any other bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        ) from None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def unsupported_media_type(got: str, accepted: tuple[str, ...]) -> HTTPException:
    return HTTPException(
        415, f"Content-Type {got or '(none)'} is not supported here; send {' or '.join(accepted)} (UTF-8)"
    )


def predictions_csv(predictions: list[dict], labels: list[str]) -> str:
    """label, confidence, then one probability per label (prob_<label> in label order), one row per text, no header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for p in predictions:
        writer.writerow([p["label"], p["confidence"], *(p["probabilities"][label] for label in labels)])
    return out.getvalue()
