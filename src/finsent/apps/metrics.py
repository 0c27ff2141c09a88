"""The server's Prometheus metrics (GET /metrics): their names, one private registry per app, and the pure-ASGI
middleware that counts requests and times them.

deploy/grafana/finsent-dashboard.json charts exactly these names (tests/apps/test_server_metrics.py checks it).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OTHER_ROUTE = "other"  # every path the app does not serve, so that the route label stays bounded
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# the top probability of 3 labels lies in [1/3, 1]
CONFIDENCE_BUCKETS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 1.0)
NAMES = (
    "finsent_requests_total",
    "finsent_texts_total",
    "finsent_request_latency_seconds",
    "finsent_batch_size",
    "finsent_predictions_total",
    "finsent_confidence",
    "finsent_queue_depth",
    "finsent_model_info",
    "finsent_prediction_log_dropped_total",
)


class _Dropped:
    """A collector: the prediction log's dropped rows as a counter, read at scrape time."""

    def __init__(self, count: Callable[[], float]):
        self.count = count

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily(
            "finsent_prediction_log_dropped",
            "Prediction log rows dropped (queue full or the file could not be written); 0 without --log_predictions",
            value=float(self.count()),
        )


class ServerMetrics:
    """The metrics of one app, on their own registry (never the global one: a process may build many apps)."""

    def __init__(
        self,
        *,
        model_version: str,
        backend: str,
        labels: Sequence[str],
        queue_depth: Callable[[], float],
        dropped: Callable[[], float] = lambda: 0,
    ):
        self.registry = CollectorRegistry()
        on = {"registry": self.registry}
        self.requests = Counter(
            "finsent_requests", "HTTP requests answered, by route and status code", ["route", "status"], **on
        )
        self.texts = Counter("finsent_texts", "Texts scored, by route", ["route"], **on)
        self.latency = Histogram(
            "finsent_request_latency_seconds",
            "Time from a request's arrival to its response's last byte, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            **on,
        )
        self.batch_size = Histogram(
            "finsent_batch_size", "Texts per forward pass of the micro-batcher", buckets=BATCH_BUCKETS, **on
        )
        self.predictions = Counter("finsent_predictions", "Predictions answered, by predicted label", ["label"], **on)
        for label in labels:  # every label from 0, so that rates and shares exist before its first prediction
            self.predictions.labels(label)
        self.confidence = Histogram(
            "finsent_confidence", "Probability of the predicted label", buckets=CONFIDENCE_BUCKETS, **on
        )
        Gauge("finsent_queue_depth", "Requests waiting for the micro-batcher", **on).set_function(queue_depth)
        info = Gauge("finsent_model_info", "The model served (always 1)", ["version", "backend"], **on)
        info.labels(model_version, backend).set(1)
        self.registry.register(_Dropped(dropped))

    def observe(self, route: str, predictions: Sequence[dict]) -> None:
        """Count one request's scored texts, their labels and confidences."""
        self.texts.labels(route).inc(len(predictions))
        for label, count in Tally(p["label"] for p in predictions).items():
            self.predictions.labels(label).inc(count)
        observe = self.confidence.observe
        for p in predictions:
            observe(p["confidence"])

    def response(self) -> Response:
        """The Prometheus text exposition of this app's registry."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Pure-ASGI middleware: count every HTTP request by route and status, and time it to its last byte.

    The route label is the path for the app's own routes and OTHER_ROUTE for the rest.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: Iterable[str]):
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else OTHER_ROUTE
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
