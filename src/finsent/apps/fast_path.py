"""The hot path of the HTTP API: a plain JSON request to POST /predict or /invocations scored without FastAPI's routing.

A request is plain when its Content-Type is application/json, its Content-Length is within the body limit, it does
not ask for a CSV answer and its body is a valid `PredictRequest` (the server installs this for sentence-level runs
only). Anything else goes on to the full app unchanged (the body already read is handed on), so the full app stays
the one owner of every error message; a plain request gets the JSON the full app would send, from the same function.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection

from pydantic import ValidationError
from pydantic_core import to_json
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from finsent.apps.bodies import JSON_TYPES
from finsent.apps.schemas import PredictRequest

JSON_HEADERS = [(b"content-type", b"application/json")]


class FastPredict:
    """Pure-ASGI middleware: answer plain requests on `paths` with `answer(texts, route, started)`, hand on the rest."""

    def __init__(
        self,
        app: ASGIApp,
        answer: Callable[[list[str], str, float], Awaitable[dict]],
        paths: Collection[str],
        max_body_bytes: int,
    ):
        self.app = app
        self.answer = answer
        self.paths = frozenset(paths)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:  # the first of a repeated header, as the route's request.headers reads it
            headers.setdefault(name, value)
        length = headers.get(b"content-length", b"")
        if (
            headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1") not in JSON_TYPES
            or b"text/csv" in headers.get(b"accept", b"")
            or not length.isdigit()
            or int(length) > self.max_body_bytes
        ):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the full app sees it as it would have
                await self.app(scope, _replay(body, receive, message), send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            texts = PredictRequest.model_validate_json(body).texts
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)
            return
        payload = to_json(await self.answer(texts, scope["path"], started))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, receive: Receive, last: Message | None = None) -> Receive:
    """A receive that gives the body already read as one message (then `last`, if any), then the client's own."""
    pending = [{"type": "http.request", "body": body, "more_body": False}] if last is None else [last]
    if last is not None and body:
        pending.insert(0, {"type": "http.request", "body": body, "more_body": True})

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
