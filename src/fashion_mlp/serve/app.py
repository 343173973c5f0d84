"""`fashion-mlp serve`: the Open Inference Protocol (KServe v2 REST) for programs, a page for people.

The routes are the table at the bottom. Handlers are thin: read the body (within its limits), decode
it (protocol.py), run the model, encode. Every error is a ``{"error": "..."}`` body with a 4xx status,
made in one place (``_error``). Requests that arrive while a model is busy are answered together: each
model has a ``Batcher`` that runs one matrix product for all the rows waiting, so at batch 1 the
weights are read once for many requests instead of once each.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .. import __version__, checkpoint, data
from ..errors import InvalidValue
from ..images import MAX_PIXELS, ImageError, load_image
from ..nn import Inference
from . import protocol
from .metrics import Instrument, Metrics
from .protocol import ProtocolError

STATIC = Path(__file__).parent / "static"
for _noisy in ("python_multipart", "multipart"):  # it logs every malformed part; we answer with a 4xx instead
    logging.getLogger(_noisy).setLevel(logging.ERROR)
VERSION = "1"  # each checkpoint is served as version 1 of its model
IMAGE_STATUS = {"unreadable": 415, "too large": 413, "blank": 422}


@dataclass(frozen=True)
class Limits:
    """Everything a client can make the server spend, bounded. server.py enforces the connection's
    part (connections, header bytes, idle and head deadlines, the lingering close); the app the rest."""

    max_body_bytes: int = 8 << 20  # a 10,000-row FP32 batch is 31 MB in binary: ask for more with the flag
    max_rows: int = 4096
    max_image_pixels: int = MAX_PIXELS
    max_concurrency: int = 256  # requests in flight
    read_timeout_s: float = 30.0  # for a request's head, and again for its body
    max_batch_rows: int = 1024  # rows combined into one product
    infer_timeout_s: float = 60.0  # longest a request waits for the model
    max_connections: int = 512  # open at once, idle ones included
    max_header_bytes: int = 16 << 10  # the request line and headers
    keep_alive_s: float = 5.0  # an idle connection's life
    linger_s: float = 30.0  # after an early answer: longest we read and throw away what still comes ...
    linger_idle_s: float = 5.0  # ... and longest without a byte, before closing (nginx's bounds)


@dataclass
class Model:
    """One served checkpoint: its folded network, class names and what the page shows of it."""

    name: str
    path: Path
    inference: Inference
    class_names: list[str]
    test_accuracy: float | None
    architecture: str
    batcher: Batcher = field(init=False)

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.inference)


def load_model(name: str, path: Path) -> Model:
    """Load and check a checkpoint as `evaluate` does; a model for Fashion-MNIST's 784 pixels only."""
    loaded = checkpoint.load(path)
    inputs, outputs = loaded.model.n_inputs, loaded.model.n_classes
    if inputs != protocol.N_PIXELS:
        raise InvalidValue(f"{path}: a model of {inputs} inputs; serve takes Fashion-MNIST models of 784")
    names = list(loaded.meta.get("class_names") or data.CLASS_NAMES)
    if len(names) != outputs:
        raise InvalidValue(f"{path}: {len(names)} class names for {outputs} outputs")
    accuracy = _test_accuracy(path)
    return Model(name, Path(path), loaded.inference(), names, accuracy, loaded.model.describe())


def _test_accuracy(path: Path) -> float | None:
    """The run's test accuracy, from summary.json beside the checkpoint, if there is one."""
    try:
        summary = orjson.loads((Path(path).parent / "summary.json").read_bytes())
        value = summary.get("test_accuracy") if isinstance(summary, dict) else None
        return float(value) if isinstance(value, (int, float)) else None
    except (OSError, orjson.JSONDecodeError):
        return None


class Batcher:
    """Runs every waiting request's rows through one product. While a product runs (in a worker
    thread, so the event loop goes on accepting requests), new rows queue; the next product takes
    all of them, up to max_batch_rows.

    Every request gets an answer: its rows' probabilities, the error that stopped its batch, or a 503
    after ``timeout_s``. Whatever goes wrong in the drain, each future it took is resolved."""

    def __init__(
        self,
        inference: Inference,
        max_batch_rows: int = 1024,
        timeout_s: float = 60.0,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.inference = inference
        self.on_batch = on_batch  # told each batch's requests and rows as its product starts (metrics)
        self.max_batch_rows = max_batch_rows
        self.timeout_s = timeout_s
        self.waiting: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self.task: asyncio.Task[None] | None = None  # the drain, held so it cannot be collected mid-run

    async def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self.waiting.append((pixels, future))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._drain())
        try:
            return await asyncio.wait_for(future, self.timeout_s)  # cancels the future on timeout
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            raise ProtocolError(
                f"the model did not answer within {self.timeout_s:g} s; retry shortly", 503
            ) from None

    def _predict(self, pixels: np.ndarray, one_thread: bool) -> np.ndarray:
        if one_thread and (blas := _blas()) is not None:
            with blas.limit(limits=1, user_api="blas"):
                return self.inference.predict_proba(pixels)
        return self.inference.predict_proba(pixels)

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        """The next batch: waiting requests in order, skipping those whose client has gone."""
        batch, rows = [], 0
        while self.waiting and (not batch or rows + len(self.waiting[0][0]) <= self.max_batch_rows):
            pixels, future = self.waiting.pop(0)
            if not future.done():
                batch.append((pixels, future))
                rows += len(pixels)
        return batch

    async def _drain(self) -> None:
        batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        try:
            while self.waiting:
                batch = self._take()
                if not batch:
                    continue
                if self.on_batch is not None:
                    self.on_batch(len(batch), sum(len(p) for p, _ in batch))
                try:
                    stacked = batch[0][0] if len(batch) == 1 else np.concatenate([p for p, _ in batch])
                    # In a thread, so that the event loop goes on reading the requests that will form the
                    # next batch. (Run on the loop instead, a lone request at concurrency 1 was 10-25%
                    # faster, but concurrency 32 lost as much.)
                    probabilities = await asyncio.to_thread(
                        self._predict, stacked, len(stacked) <= ONE_THREAD_ROWS
                    )
                except Exception as err:  # a bug of ours: reported to each request of the batch
                    _resolve(batch, err)
                    continue
                start = 0
                for pixels, future in batch:
                    if not future.done():  # its client may have gone
                        future.set_result(probabilities[start : start + len(pixels)])
                    start += len(pixels)
        finally:  # cancelled (the server is stopping) or worse: nobody is left waiting
            stopped = ProtocolError("the server is stopping; retry shortly", 503)
            _resolve(batch + self.waiting, stopped)
            self.waiting.clear()


# A small product runs on one BLAS thread. OpenBLAS's second thread spins for a while after each product,
# waiting for the next, and takes the core that the event loop (and, on one machine, the client) needs
# to read the next requests. On 784-1024-1024-10, batch-1 JSON, in turns (2026-12-05, 5 rounds):
# concurrency 1, 1,338 requests/s with a p99 of 0.9 ms, against 1,040 and 4.2 ms with both threads;
# concurrency 32, 3,259 against 2,954. A product of more than 32 rows keeps both threads: a lone request
# of 64 rows was answered at 456 requests/s with both, 294 with one.
ONE_THREAD_ROWS = 32


@functools.cache
def _blas() -> Any:
    """threadpoolctl's controller of the BLAS NumPy loaded, or None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _resolve(batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]], err: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(err)


# ---------------------------------------------------------------- the app


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The whole body, refusing one longer than the limit (413) or slower than the read timeout (408)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        size = protocol.parse_count(declared, "Content-Length")
        if size > limits.max_body_bytes:
            raise ProtocolError(f"the body is {size:,} bytes; the limit is {limits.max_body_bytes:,}", 413)
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise ProtocolError(f"the body is over the limit of {limits.max_body_bytes:,} bytes", 413)
            chunks.append(chunk)

    try:
        with anyio.fail_after(limits.read_timeout_s):  # a cancel scope: no task of its own
            await read()
    except TimeoutError:
        raise ProtocolError(f"the body took longer than {limits.read_timeout_s:g} s to arrive", 408) from None
    return b"".join(chunks)


def create_app(
    models: dict[str, Model], limits: Limits | None = None, with_metrics: bool = True
) -> CloseEarly:
    """The ASGI app: the routes below, inside a cap on requests in flight, inside the metrics'
    ``Instrument`` (unless ``with_metrics`` is False: then no /metrics either), inside ``CloseEarly``."""
    limits = limits or Limits()
    metrics = Metrics(VERSION) if with_metrics else None
    for model in models.values():
        model.batcher.max_batch_rows = limits.max_batch_rows
        model.batcher.timeout_s = limits.infer_timeout_s
        if metrics is not None:
            model.batcher.on_batch = metrics.add_model(model.name, model.architecture, model.test_accuracy)

    def find(request: Request) -> Model:
        name = request.path_params["name"]
        if name not in models:
            raise ProtocolError(f"unknown model {name!r}; this server has {', '.join(sorted(models))}", 404)
        version = request.path_params.get("version")
        if version is not None and version != VERSION:
            raise ProtocolError(f"model {name!r} has no version {version!r}; it has version {VERSION}", 404)
        return models[name]

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(
            {"name": "fashion-mlp", "version": __version__, "extensions": protocol.EXTENSIONS}
        )

    async def model_metadata(request: Request) -> Response:
        model = find(request)
        return JSONResponse(protocol.model_metadata(model.name, len(model.class_names)))

    async def model_ready(request: Request) -> Response:
        find(request)
        return JSONResponse({"name": request.path_params["name"], "ready": True})

    async def infer(request: Request) -> Response:
        model = find(request)
        body = await _read_body(request, limits)
        parsed = protocol.parse_infer_request(
            body, request.headers.get("inference-header-content-length"), limits.max_rows
        )
        probabilities = await model.batcher.predict_proba(parsed.pixels)
        tensors = protocol.output_tensors(probabilities, model.class_names)
        content, headers = protocol.encode_infer_response(model.name, VERSION, parsed, tensors)
        return Response(content, headers=headers)

    async def classify(request: Request) -> Response:
        name = request.query_params.get("model") or next(iter(models))
        model = models.get(name)
        if model is None:
            raise ProtocolError(f"unknown model {name!r}; this server has {', '.join(sorted(models))}", 404)
        top_k = _top_k(request.query_params.get("top_k", "3"), len(model.class_names))
        body = await _read_body(request, limits)
        image_bytes = await _image_from(request, body)
        try:
            image = await asyncio.to_thread(
                load_image, io.BytesIO(image_bytes), limits.max_image_pixels, "upload"
            )
        except ImageError as err:
            raise ProtocolError(str(err), IMAGE_STATUS[err.kind]) from None
        probabilities = (await model.batcher.predict_proba(image.reshape(1, -1).astype(np.float32)))[0]
        order = np.argsort(probabilities)[::-1]
        return JSONResponse(
            {
                "model": model.name,
                "top": [
                    {"class": model.class_names[i], "probability": float(probabilities[i])}
                    for i in order[:top_k]
                ],
                "probabilities": {n: float(p) for n, p in zip(model.class_names, probabilities)},
                "image": "data:image/png;base64," + base64.b64encode(_png(image)).decode(),
            }
        )

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "models": [
                    {
                        "name": m.name,
                        "architecture": m.architecture,
                        "test_accuracy": m.test_accuracy,
                        "classes": m.class_names,
                    }
                    for m in models.values()
                ]
            }
        )

    async def page(request: Request) -> Response:
        return HTMLResponse((STATIC / "index.html").read_text())

    async def prometheus(request: Request) -> Response:
        assert metrics is not None
        return Response(metrics.exposition(), media_type=metrics.content_type)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/classify", classify, methods=["POST"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    ]
    if metrics is not None:
        routes.append(Route(METRICS_PATH, prometheus, methods=["GET"]))

    async def protocol_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, ProtocolError)
        return _error(str(err), err.status)

    async def http_error(request: Request, err: Exception) -> Response:
        status = getattr(err, "status_code", 400)
        detail = {
            404: f"no route {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        return _error(detail.get(status, str(getattr(err, "detail", "bad request"))), status)

    async def disconnected(request: Request, err: Exception) -> Response:
        return _error("the client went away", 400)

    async def internal(request: Request, err: Exception) -> Response:  # a bug of ours, never bad input
        return _error(f"internal error ({type(err).__name__}); the server goes on", 500)

    app = Starlette(
        routes=routes,
        exception_handlers={
            ProtocolError: protocol_error,
            HTTPException: http_error,
            ClientDisconnect: disconnected,
            Exception: internal,
        },
    )
    app.add_middleware(ConcurrencyCap, limit=limits.max_concurrency)
    if metrics is None:
        return CloseEarly(app)
    templates = {(r.endpoint, "{version}" in r.path): r.path for r in routes}
    instrumented = Instrument(app, metrics, templates, (infer, classify), models, next(iter(models), ""))
    return CloseEarly(instrumented)


METRICS_PATH = "/metrics"  # on the main port, outside the concurrency cap: a scrape under load answers
CLOSE_AFTER = frozenset({408, 413, 503})  # RFC 9110: the connection closes after these


class CloseEarly:
    """ASGI middleware, outermost: a response sent before the request's body has all arrived (a 413
    decided from Content-Length, a 404, any error) and every 408, 413 and 503 carry
    ``Connection: close``. The server then closes, lingering to drain what the client still sends
    (server.py); keeping the connection instead would mean reading an unbounded body for nothing."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        pending = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers

        async def tracked_receive() -> dict[str, Any]:
            nonlocal pending
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                pending = False
            return message

        async def closing_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and (pending or message["status"] in CLOSE_AFTER):
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, tracked_receive, closing_send)


class ConcurrencyCap:
    """ASGI middleware: past ``limit`` requests in flight, answer 503 at once rather than queue."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit and scope["path"] != METRICS_PATH:
            busy = _error(f"the server is busy ({self.limit} requests in flight); retry shortly", 503)
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def _top_k(text: str, n_classes: int) -> int:
    value = protocol.parse_count(text, "top_k")
    if not 1 <= value <= n_classes:
        raise ProtocolError(f"top_k must be an integer from 1 to {n_classes}, got {text!r}")
    return value


async def _image_from(request: Request, body: bytes) -> bytes:
    """The image: a multipart form's field 'image', or the raw body."""
    if not body:
        raise ProtocolError("the request body is empty; send a PNG or JPEG image")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return body

    async def replay() -> dict[str, Any]:  # the body was read already, within its limits
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception as err:  # python-multipart's parse errors carry no common base class
        raise ProtocolError(f"the multipart body cannot be parsed ({type(err).__name__})") from None
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise ProtocolError("the multipart form needs a file field named 'image'")
    return await upload.read()


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()
