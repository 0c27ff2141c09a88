"""HTTP API: a FastAPI app over one Predictor, concurrent requests micro-batched into shared forward passes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from starlette.concurrency import run_in_threadpool

from finsent.documents import AnalyzeRequest, analyze_text
from finsent.errors import FinsentError
from finsent.inference import is_valid_unicode

MAX_TEXTS = 1000
MAX_TEXT_CHARS = 10_000
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_BATCH_TEXTS = 256
MAX_WAIT_MS = 2.0


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


class PredictResponse(BaseModel):
    model_version: str
    backend: str
    predictions: list[Prediction]


class MicroBatcher:
    """Queue concurrent requests, wait a few ms for company, score them in one call on a worker thread."""

    def __init__(
        self,
        score: Callable[[list[str]], list[dict]],
        max_batch_texts: int = MAX_BATCH_TEXTS,
        max_wait_ms: float = MAX_WAIT_MS,
    ):
        self.score = score
        self.max_batch_texts = max_batch_texts
        self.max_wait = max_wait_ms / 1000
        self.requests = 0
        self.batches = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finsent-inference")
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list[dict]:
        """Score texts together with whatever other requests arrive meanwhile."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry = None
        while True:
            first = carry or await self._queue.get()
            carry = None
            if self._queue.empty() and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)
            batch, n = [first], len(first[0])
            while not self._queue.empty() and n < self.max_batch_texts:
                item = self._queue.get_nowait()
                if n + len(item[0]) > self.max_batch_texts:
                    carry = item
                    break
                batch.append(item)
                n += len(item[0])
            batch = [(texts, fut) for texts, fut in batch if not fut.cancelled()]
            if not batch:
                continue
            texts = [t for ts, _ in batch for t in ts]
            try:
                results = await loop.run_in_executor(self._executor, self.score, texts)
            except Exception as e:  # noqa: BLE001 - handed to the waiting requests
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.requests += len(batch)
            start = 0
            for ts, fut in batch:
                if not fut.done():
                    fut.set_result(results[start : start + len(ts)])
                start += len(ts)


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for err in errors[:5]:
        if err.get("type") == "json_invalid":
            parts.append(
                f'the body is not valid JSON (error near character {err.get("loc", ("", "?"))[-1]}); send {{"texts": ["..."]}} with Content-Type: application/json'
            )
            continue
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def create_app(predictor, max_batch_texts: int | None = None, max_wait_ms: float | None = None) -> FastAPI:
    """The finsent API over a loaded Predictor; the model is fixed here, never chosen by a request."""
    batcher = MicroBatcher(
        predictor.predict, max_batch_texts or MAX_BATCH_TEXTS, MAX_WAIT_MS if max_wait_ms is None else max_wait_ms
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    from finsent import __version__

    app = FastAPI(
        title="finsent",
        version=__version__,
        lifespan=lifespan,
        max_body_size=MAX_BODY_BYTES,
        description=f"Sentiment (negative / neutral / positive) of financial news sentences. Model {predictor.info.version}, {predictor.backend_name} backend.",
    )
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k not in ("input", "url", "ctx")} for e in exc.errors()]
        return JSONResponse(
            status_code=422, content={"message": _validation_message(errors), "detail": jsonable_encoder(errors)}
        )

    @app.post("/predict", response_model=PredictResponse, summary="Score 1 to 1,000 sentences")
    async def predict(request: PredictRequest) -> dict:
        predictions = await batcher.submit(request.texts)
        return {"model_version": predictor.info.version, "backend": predictor.backend_name, "predictions": predictions}

    @app.post("/analyze", summary="Sentence sentiment, section aggregates and question evidence for one document")
    async def analyze(request: AnalyzeRequest):
        try:
            return await run_in_threadpool(analyze_text, predictor, request.text, request.questions, request.top_k)
        except FinsentError as e:
            return JSONResponse(status_code=422, content={"message": str(e), "detail": []})

    @app.get("/health", summary="Liveness: the model is loaded")
    async def health() -> dict:
        return {"status": "ok", "model_version": predictor.info.version, "backend": predictor.backend_name}

    @app.get("/metadata", summary="Model version, labels, backend and the run's test metrics")
    async def metadata() -> dict:
        serving = {
            "max_batch_texts": batcher.max_batch_texts,
            "max_wait_ms": batcher.max_wait * 1000,
            "max_texts_per_request": MAX_TEXTS,
            "max_text_chars": MAX_TEXT_CHARS,
            "requests_served": batcher.requests,
            "forward_batches": batcher.batches,
        }
        return jsonable_encoder({**predictor.metadata(), "serving": serving})

    return app


def serve(predictor, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **batching) -> None:
    """Run the API with uvicorn (one process; concurrency comes from micro-batching)."""
    import uvicorn

    uvicorn.run(create_app(predictor, **batching), host=host, port=port, log_level=log_level)
