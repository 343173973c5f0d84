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
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
UNMATCHED = "(unmatched)"  # the path label of a request no route matches: one label, whatever the path


class Histogram:
    """One label set's histogram: a count per bucket (the last one past every bound) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # a bound is the bucket's inclusive top
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Prometheus' cumulative buckets, ending with +Inf."""
        out, total = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts):
            total += count
            out.append((bound, total))
        return out


class Metrics:
    """One server's metrics, in a registry of its own (two apps in one process never share counts).

    Counts are plain integers, kept on the event loop's thread (the middleware and the batcher both run
    there), and turned into Prometheus' families only when scraped: a custom collector, as
    prometheus_client suggests for hot paths. A request costs a dictionary lookup and a few additions,
    no lock."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, version: str) -> None:
        self.version = version
        self.requests: dict[tuple[str, str, str, str], int] = {}  # method, path, status, model
        self.latency: dict[tuple[str, str, str], Histogram] = {}  # method, path, model
        self.in_progress = 0
        self.outcomes: dict[str, list[int]] = {}  # model -> [successes, failures]
        self.batches: dict[str, tuple[Histogram, Histogram]] = {}  # model -> (requests, rows)
        self.info: dict[str, tuple[str, str]] = {}  # model -> (architecture, test accuracy)
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.registry.register(self)

    def add_model(
        self, name: str, architecture: str, test_accuracy: float | None
    ) -> Callable[[int, int], None]:
        """Record the model's info; return what its batcher calls with each batch's requests and rows."""
        self.info[name] = (architecture, "" if test_accuracy is None else f"{test_accuracy:.4f}")
        self.outcomes[name] = [0, 0]  # present at 0 from the start, so that rate() sees the first
        queue, rows = self.batches[name] = (Histogram(BATCH_BUCKETS), Histogram(BATCH_BUCKETS))

        def observe(requests: int, n_rows: int) -> None:
            queue.observe(requests)
            rows.observe(n_rows)

        return observe

    def record(
        self, method: str, path: str, status: int, model: str, seconds: float, inference: bool
    ) -> None:
        """One answered request."""
        key = (method, path, str(status), model)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get((method, path, model))
        if histogram is None:
            histogram = self.latency[(method, path, model)] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)
        if inference and model:
            self.outcomes[model][status != 200] += 1

    def collect(self) -> Iterator[Metric]:
        """The families, built at each scrape from the counts above (called by prometheus_client)."""
        requests = CounterMetricFamily(
            "rest_server_requests",
            "HTTP requests answered, by route template, status and model",
            labels=["method", "path", "status_code", "model_name"],
        )
        for labels, count in list(self.requests.items()):
            requests.add_metric(labels, count)
        yield requests
        latency = HistogramMetricFamily(
            "rest_server_requests_duration_seconds",
            "Time from a request's head to its answer's last byte",
            labels=["method", "path", "model_name"],
        )
        for labels, histogram in list(self.latency.items()):
            latency.add_metric(labels, histogram.buckets(), histogram.sum)
        yield latency
        yield GaugeMetricFamily(
            "rest_server_requests_in_progress", "HTTP requests in flight", self.in_progress
        )
        model_labels = ["model_name", "model_version"]
        success = CounterMetricFamily(
            "model_infer_request_success", "Inference requests answered 200", labels=model_labels
        )
        failure = CounterMetricFamily(
            "model_infer_request_failure", "Inference requests answered with an error", labels=model_labels
        )
        queue = HistogramMetricFamily(
            "batch_request_queue",
            "Requests served by each product: the batcher's queue as the product starts",
            labels=model_labels,
        )
        rows = HistogramMetricFamily(
            "batch_rows", "Rows in each product the batcher runs", labels=model_labels
        )
        info = GaugeMetricFamily(
            "model_info",
            "1 for each model served, labelled with what it is",
            labels=["model_name", "model_version", "architecture", "test_accuracy"],
        )
        for name, (architecture, accuracy) in self.info.items():
            labels = [name, self.version]
            success.add_metric(labels, self.outcomes[name][0])
            failure.add_metric(labels, self.outcomes[name][1])
            for family, histogram in zip((queue, rows), self.batches[name]):
                family.add_metric(labels, histogram.buckets(), histogram.sum)
            info.add_metric([*labels, architecture, accuracy], 1)
        yield from (success, failure, queue, rows, info)

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
        metrics.in_progress += 1
        try:
            await self.app(scope, receive, counting_send)
        finally:
            metrics.in_progress -= 1
            endpoint = scope.get("endpoint")  # set by the router on the scope we passed down
            params = scope.get("path_params") or {}
            path = self.templates.get((endpoint, "version" in params), UNMATCHED)
            model = params.get("name", "")
            inference = endpoint in self.inference
            if inference and not model:  # /classify names its model in the query
                model = _query_model(scope) or self.default_model
            if model not in self.models:
                model = ""
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            metrics.record(method, path, status, model, time.perf_counter() - started, inference)


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def _query_model(scope: dict[str, Any]) -> str:
    from urllib.parse import parse_qs

    query = scope.get("query_string") or b""
    if not query:
        return ""
    values = parse_qs(query.decode("latin-1")).get("model")
    return values[0] if values else ""
