"""HTTP API: a FastAPI app over one Predictor, concurrent requests micro-batched into shared forward passes.

Also the SageMaker inference contract (GET /ping, POST /invocations), Prometheus metrics (GET /metrics), the
prediction log, and the server's security rules: a bearer API key on every route but the health checks, and no
start on a non-loopback address without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import time
from collections.abc import Collection, Mapping
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from finsent.apps import entity_api
from finsent.apps.batcher import BALANCE_MS, MAX_BATCH_TEXTS, MAX_WAIT_MS, MicroBatcher
from finsent.apps.bodies import (
    CSV_TYPES,
    JSON_TYPES,
    media_type,
    parse_csv,
    parse_json,
    predictions_csv,
    unsupported_media_type,
    validate_request,
    validation_message,
)
from finsent.apps.fast_path import FastPredict
from finsent.apps.metrics import RequestMetrics, ServerMetrics
from finsent.apps.schemas import MAX_TEXT_CHARS, MAX_TEXTS, AnalyzeRequest
from finsent.core.errors import FinsentError
from finsent.data.entities import ENTITY
from finsent.documents.analysis import analyze_text

MAX_BODY_BYTES = 16 * 1024 * 1024
API_KEY_ENV = "FINSENT_API_KEY"
OPEN_PATHS = frozenset({"/health", "/ping"})
PREDICT_PATHS = ("/predict", "/invocations")
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
SAGEMAKER_PORT = 8080


class BearerAuth:
    """ASGI middleware: every HTTP route except the open paths needs `Authorization: Bearer <key>` (constant-time)."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: Collection[str] = OPEN_PATHS):
        self.app = app
        self.key = api_key.encode("utf-8")
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("utf-8"), self.key):
            await self.app(scope, receive, send)
            return
        message = (
            "wrong API key" if scheme.lower() == "bearer" else "this server needs an API key"
        ) + f"; send the header 'Authorization: Bearer <key>' with the key the server was started with ({API_KEY_ENV})"
        response = JSONResponse({"message": message}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


def create_app(
    predictor,
    max_batch_texts: int | None = None,
    max_wait_ms: float | None = None,
    balance_ms: float | None = None,
    api_key: str | None = None,
    cors_origins: list[str] | None = None,
    prediction_log=None,
    metrics_public: bool = False,
) -> FastAPI:
    """The finsent API over a loaded Predictor; the model is fixed here, never chosen by a request.

    With api_key, every route but /health and /ping (and /metrics with metrics_public) needs it as a bearer token;
    CORS is off unless origins are given. A prediction_log (monitoring.predlog.PredictionLog) is given every answered
    prediction of /predict and /invocations; the app's lifespan starts it and closes (flushes) it.
    """
    batcher = MicroBatcher(
        predictor.predict,
        max_batch_texts or MAX_BATCH_TEXTS,
        MAX_WAIT_MS if max_wait_ms is None else max_wait_ms,
        workers=getattr(predictor, "streams", 1),  # a CascadePredictor scores one batch at a time
        balance_ms=BALANCE_MS if balance_ms is None else balance_ms,
    )
    metrics = ServerMetrics(
        model_version=predictor.info.version,
        backend=predictor.backend_name,
        labels=list(predictor.labels),
        queue_depth=batcher.queued,
        dropped=(lambda: prediction_log.dropped) if prediction_log is not None else (lambda: 0),
    )
    batcher.on_batch = metrics.batch_size.observe
    app = _new_app(predictor, batcher, prediction_log)
    app.state.metrics = metrics
    _add_error_handlers(app)
    answer = _answerer(predictor, batcher, metrics, prediction_log)
    _add_predict_routes(app, predictor, answer)
    _add_analyze_route(app, predictor)
    _add_info_routes(app, predictor, batcher)
    app.get("/metrics", summary="Prometheus metrics (text exposition format)")(metrics.response)
    if entity_api.task(predictor) != ENTITY:  # innermost: behind authentication and the metrics
        app.add_middleware(FastPredict, answer=answer, paths=PREDICT_PATHS, max_body_bytes=MAX_BODY_BYTES)
    open_paths = OPEN_PATHS | {"/metrics"} if metrics_public else OPEN_PATHS
    _add_middleware(app, api_key, cors_origins, open_paths)
    # outermost: every request is counted, the 401s and the CORS preflights too
    app.add_middleware(RequestMetrics, metrics=metrics, routes=[route.path for route in app.routes])
    return app


def _new_app(predictor, batcher: MicroBatcher, prediction_log=None) -> FastAPI:
    """The FastAPI app whose lifespan starts and stops the batcher, and the prediction log (closing it flushes it)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if prediction_log is not None:
            prediction_log.start()
        await batcher.start()
        try:
            yield
        finally:
            try:
                await batcher.stop()
            finally:  # the log is flushed even when the batcher fails to stop
                if prediction_log is not None:
                    await asyncio.to_thread(prediction_log.close)

    from finsent import __version__

    app = FastAPI(
        title="finsent",
        version=__version__,
        lifespan=lifespan,
        max_body_size=MAX_BODY_BYTES,
        description=f"Sentiment (negative / neutral / positive) of financial news sentences. Model {predictor.info.version}, {predictor.backend_name} backend.",
    )
    app.state.batcher = batcher
    return app


def _add_middleware(
    app: FastAPI, api_key: str | None, cors_origins: list[str] | None, open_paths: Collection[str] = OPEN_PATHS
) -> None:
    """Bearer authentication where a key is given (open_paths left open); CORS outside it where origins are given."""
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key, open_paths=open_paths)
    if cors_origins:  # outermost, so a browser's preflight is answered before authentication
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )


def _add_error_handlers(app: FastAPI) -> None:
    """Validation errors and HTTP errors as {"message", "detail"} JSON."""

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k not in ("input", "url", "ctx")} for e in exc.errors()]
        return JSONResponse(
            status_code=422, content={"message": validation_message(errors), "detail": jsonable_encoder(errors)}
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"message": exc.detail, "detail": exc.detail},
            headers=getattr(exc, "headers", None),
        )


def _answerer(predictor, batcher: MicroBatcher, metrics: ServerMetrics, log=None):
    """The one scoring path of /predict and /invocations (the full routes and the fast path): texts through the
    batcher, each answer counted in the metrics and handed to the prediction log, which only enqueues it."""
    version, backend = predictor.info.version, predictor.backend_name

    async def answer(texts: list[str], route: str, started: float) -> dict:
        predictions = await batcher.submit(texts)
        metrics.observe(route, predictions)
        if log is not None:
            log.record(texts, predictions, (time.perf_counter() - started) * 1000, route)
        return {"model_version": version, "backend": backend, "predictions": predictions}

    return answer


def _add_predict_routes(app: FastAPI, predictor, answer) -> None:
    """POST /predict (JSON) and POST /invocations (SageMaker: JSON or text/csv in, JSON or text/csv out)."""

    async def score(request: Request, csv_body: bool = False) -> dict:
        started, route = time.perf_counter(), request.scope["path"]
        body = await request.body()
        if csv_body:
            entity_api.refuse_csv(predictor)
            texts, pairs = validate_request({"texts": parse_csv(body)}).texts, None
        else:
            texts, pairs = entity_api.read_json(predictor, parse_json(body))  # an entity run: one text per pair
        result = await answer(texts, route, started)
        if pairs is not None:
            result["predictions"] = entity_api.pair_predictions(pairs, result["predictions"])
        return result

    response_model = entity_api.response_model(predictor)
    json_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": entity_api.request_model(predictor).model_json_schema()}},
        }
    }

    @app.post(
        "/predict",
        response_model=response_model,
        response_model_exclude_none=True,
        summary="Score 1 to 1,000 sentences (an entity run: (text, entity) pairs given as items)",
        openapi_extra=json_body,
    )
    async def predict(request: Request) -> dict:
        if media_type(request) not in JSON_TYPES:
            raise unsupported_media_type(media_type(request), JSON_TYPES)
        return await score(request)

    @app.post(
        "/invocations",
        summary="SageMaker inference: application/json as /predict, or text/csv with one sentence a line",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {**json_body["requestBody"]["content"], "text/csv": {"schema": {"type": "string"}}},
            }
        },
    )
    async def invocations(request: Request) -> Response:
        kind = media_type(request)
        if kind not in CSV_TYPES + JSON_TYPES:
            raise unsupported_media_type(kind, JSON_TYPES + CSV_TYPES)
        result = await score(request, csv_body=kind in CSV_TYPES)
        if "text/csv" in request.headers.get("accept", ""):
            to_csv = entity_api.pairs_csv if entity_api.task(predictor) == "entity" else predictions_csv
            return Response(to_csv(result["predictions"], list(predictor.labels)), media_type="text/csv")
        return JSONResponse(jsonable_encoder(response_model(**result), exclude_none=True))


def _add_analyze_route(app: FastAPI, predictor) -> None:
    """POST /analyze: one document's sentence sentiment, section aggregates and question evidence."""

    @app.post(
        "/analyze",
        summary="Sentence sentiment, section aggregates and question evidence for one document",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": AnalyzeRequest.model_json_schema()}},
            }
        },
    )
    async def analyze(request: Request):
        if media_type(request) not in JSON_TYPES:
            raise unsupported_media_type(media_type(request), JSON_TYPES)
        entity_api.sentence_only(predictor, "/analyze")
        body = validate_request(parse_json(await request.body()), AnalyzeRequest)
        try:
            return await run_in_threadpool(analyze_text, predictor, body.text, body.questions, body.top_k)
        except FinsentError as e:
            return JSONResponse(status_code=422, content={"message": str(e), "detail": []})


def _add_info_routes(app: FastAPI, predictor, batcher: MicroBatcher) -> None:
    """GET /health, /ping (SageMaker's health check) and /metadata."""

    @app.get("/health", summary="Liveness: the model is loaded")
    async def health() -> dict:
        return {"status": "ok", "model_version": predictor.info.version, "backend": predictor.backend_name}

    app.get("/ping", summary="SageMaker health check: 200 once the model is loaded")(health)

    @app.get("/metadata", summary="Model version, labels, backend and the run's test metrics")
    async def metadata() -> dict:
        serving = {
            "max_batch_texts": batcher.max_batch_texts,
            "max_wait_ms": batcher.max_wait * 1000,
            "balance_ms": batcher.balance * 1000,
            "streams": batcher.workers,
            "max_texts_per_request": MAX_TEXTS,
            "max_text_chars": MAX_TEXT_CHARS,
            "requests_served": batcher.requests,
            "forward_batches": batcher.batches,
        }
        return jsonable_encoder({**predictor.metadata(), "task": entity_api.task(predictor), "serving": serving})


def read_api_key(api_key_file: str | None, env: Mapping[str, str]) -> str | None:
    """The API key from --api_key_file (first line) or else FINSENT_API_KEY; None when neither is given."""
    if api_key_file is not None:
        path = Path(api_key_file)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise FinsentError(f"{path}: no such API key file (--api_key_file)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise FinsentError(
                f"{path}: cannot read the API key file ({e.__class__.__name__}); give a UTF-8 text file"
            ) from None
        if not key or len(key.split()) > 1:
            raise FinsentError(
                f"{path}: the API key file is {'empty' if not key else 'more than one word'}; put only the key in it"
            )
        return key
    key = env.get(API_KEY_ENV)
    if key is not None and not key.strip():
        raise FinsentError(f"{API_KEY_ENV} is set but empty; set it to the key clients must send, or unset it")
    return key.strip() if key else None


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; every other address (0.0.0.0 included) reaches beyond this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None, allow_unauthenticated: bool, sagemaker: bool) -> str | None:
    """Refuse to serve a non-loopback address without a key; the line to print when serving open on purpose."""
    if api_key or is_loopback(host):
        return None
    if sagemaker:
        return f"finsent: SageMaker mode: serving on {host} without an API key; SageMaker's IAM authentication guards the endpoint"
    if allow_unauthenticated:
        return f"finsent: warning: serving on {host} without an API key (--allow_unauthenticated): anyone who reaches it can use it"
    raise FinsentError(
        f"refusing to serve on {host} without an API key: set {API_KEY_ENV} or --api_key_file FILE "
        "(clients send 'Authorization: Bearer <key>'), bind --host 127.0.0.1, or pass --allow_unauthenticated"
    )


def sagemaker_port(env: Mapping[str, str]) -> int:
    """SageMaker serves on 8080 unless the platform names another port in SAGEMAKER_BIND_TO_PORT."""
    value = env.get("SAGEMAKER_BIND_TO_PORT", str(SAGEMAKER_PORT))
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise FinsentError(f"SAGEMAKER_BIND_TO_PORT={value!r} is not a port number (1 to 65535)")
    return int(value)


def serve(
    predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    **options,
) -> None:
    """Run the API with uvicorn (one process; concurrency comes from micro-batching); options go to create_app."""
    import uvicorn

    uvicorn.run(create_app(predictor, **options), host=host, port=port, log_level=log_level)
