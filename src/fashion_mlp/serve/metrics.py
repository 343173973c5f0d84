"""Prometheus metrics for `fashion-mlp serve`, at GET /metrics on the server's own port.

Made with the official ``prometheus_client`` and named as MLServer names its own, so that a dashboard
built for one reads the other:

- ``rest_server_requests_total{method, path, status_code, model_name}``: every answer, 4xx and 5xx
  included. ``path`` is the route's template (``/v2/models/{name}/infer``), never the raw path, and
  ``model_name`` is empty unless the request names a model this server has, so a client cannot grow
  the label sets without bound.
- ``rest_server_requests_duration_seconds{method, path, model_name}``: a latency histogram, from the
  request's head to the answer's last byte handed to the connection.
- ``rest_server_requests_in_progress``: requests in flight.
- ``model_infer_request_success_total`` and ``model_infer_request_failure_total``, by ``model_name``
  and ``model_version``: inference requests (/v2/.../infer and /classify) answered 200, and not.
- ``batch_request_queue{model_name, model_version}``: a histogram of the requests each product serves
  at once, the batcher's queue as the product starts; ``batch_rows``: the rows of each product.
- ``model_info{model_name, model_version, architecture, test_accuracy}``: 1 for each model served.
- and ``prometheus_client``'s process metrics: CPU seconds, resident memory, open files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
UNMATCHED = "(unmatched)"  # the path label of a request no route matches: one label, whatever the path


class Metrics:
    """One server's metrics, in a registry of its own (two apps in one process never share counts)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, version: str) -> None:
        disable_created_metrics()  # no *_created series: half the lines, nothing a dashboard reads
        self.version = version
        self.registry = registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        self.requests = Counter(
            "rest_server_requests",
            "HTTP requests answered, by route template, status and model",
            ["method", "path", "status_code", "model_name"],
            registry=registry,
        )
        self.duration = Histogram(
            "rest_server_requests_duration_seconds",
            "Time from a request's head to its answer's last byte",
            ["method", "path", "model_name"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "rest_server_requests_in_progress", "HTTP requests in flight", registry=registry
        )
        labels = ["model_name", "model_version"]
        self.success = Counter(
            "model_infer_request_success", "Inference requests answered 200", labels, registry=registry
        )
        self.failure = Counter(
            "model_infer_request_failure",
            "Inference requests answered with an error",
            labels,
            registry=registry,
        )
        self.queue = Histogram(
            "batch_request_queue",
            "Requests served by each product: the batcher's queue as the product starts",
            labels,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.rows = Histogram(
            "batch_rows",
            "Rows in each product the batcher runs",
            labels,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.info = Gauge(
            "model_info",
            "1 for each model served, labelled with what it is",
            ["model_name", "model_version", "architecture", "test_accuracy"],
            registry=registry,
        )

    def add_model(
        self, name: str, architecture: str, test_accuracy: float | None
    ) -> Callable[[int, int], None]:
        """Record the model's info; return what its batcher calls with each batch's requests and rows."""
        accuracy = "" if test_accuracy is None else f"{test_accuracy:.4f}"
        self.info.labels(name, self.version, architecture, accuracy).set(1)
        self.success.labels(name, self.version)  # present at 0 from the start, so rate() sees the first
        self.failure.labels(name, self.version)
        queue, rows = self.queue.labels(name, self.version), self.rows.labels(name, self.version)

        def observe(requests: int, n_rows: int) -> None:
            queue.observe(requests)
            rows.observe(n_rows)

        return observe

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Instrument:
    """ASGI middleware: counts and times every request, with the route and model the router found.

    ``inference`` is the set of endpoints whose answers count as inference requests; ``models`` the
    names a label may take; ``templates`` maps (endpoint, versioned) to the route's template."""

    def __init__(
        self,
        app: Any,
        metrics: Metrics,
        templates: dict[tuple[Any, bool], str],
        inference: Iterable[Any],
        models: Iterable[str],
        default_model: str,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates
        self.inference = frozenset(inference)
        self.models = frozenset(models)
        self.default_model = default_model

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app ends without answering, the connection says so; we count a 500

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        metrics.in_progress.inc()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            metrics.in_progress.dec()
            endpoint = scope.get("endpoint")  # set by the router on the scope we passed down
            params = scope.get("path_params") or {}
            path = self.templates.get((endpoint, "version" in params), UNMATCHED)
            model = params.get("name", "")
            if endpoint in self.inference and not model:  # /classify names its model in the query
                model = _query_model(scope) or self.default_model
            if model not in self.models:
                model = ""
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            metrics.requests.labels(method, path, str(status), model).inc()
            metrics.duration.labels(method, path, model).observe(time.perf_counter() - started)
            if model and endpoint in self.inference:
                (metrics.success if status == 200 else metrics.failure).labels(model, metrics.version).inc()


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def _query_model(scope: dict[str, Any]) -> str:
    from urllib.parse import parse_qs

    query = scope.get("query_string") or b""
    if not query:
        return ""
    values = parse_qs(query.decode("latin-1")).get("model")
    return values[0] if values else ""
