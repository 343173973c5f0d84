"""The connection under the app: uvicorn's HTTP/1.1 protocol (httptools), with the limits a server that
faces the public needs, and `serve`, which binds a socket and runs it.

uvicorn parses HTTP and runs the app. ``Connection`` adds what it leaves out (read against uvicorn 0.54):

- **A lingering close.** When the server answers before a request's body has all arrived (a 413 decided
  from Content-Length, a 408, a 503), closing at once makes the kernel reset the connection over the
  bytes nobody read, and the client gets ECONNRESET instead of the answer. So after such an answer we
  shut down our half (``write_eof``: the client reads the answer, then end of file), read and throw
  away what the client still sends, and close when it closes. The linger is bounded by time only, as
  nginx bounds it (``lingering_time``, ``lingering_timeout``): ``linger_s`` in all, and
  ``linger_idle_s`` without a byte. Bytes thrown away cost no memory, so any body the client can send
  within that time gets its answer (a byte cap broke the pipe of a 70 MB upload before it could read
  its 413). This is nginx's lingering close and Go's ``closeWriteAndWait``.
- **Deadlines that trickling cannot stretch.** An idle connection closes after ``keep_alive_s``; once a
  request's first byte arrives, its head must be complete within ``read_timeout_s`` (408 otherwise).
  uvicorn cancels its keep-alive timer on any byte and arms nothing in its place.
- **Caps** on open connections (503) and on a request's head (431), and a JSON body on every refusal
  made here, as the app's own errors have.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..errors import InvalidValue
from .app import Limits, Model, create_app, load_model


class Refusal(Exception):
    """Raised in a parser callback: answer ``status`` with ``message`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Connection(HttpToolsProtocol):
    """One client connection: uvicorn's protocol, with the deadlines, caps and lingering close above."""

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.socket_transport: asyncio.Transport | None = None  # the real one; uvicorn holds a _Closer
        self.idle = False  # between requests, nothing of the next one received
        self.in_head = False  # a request's line and headers are arriving
        self.message_open = False  # a request has begun and its body has not all arrived
        self.head_bytes = 0  # of the head so far, counted exactly in the callbacks
        self.raw_head_bytes = 0  # bytes received while a head stays incomplete, after its first chunk
        self.lingering = False
        self.linger_until = 0.0  # the loop's clock, past which a lingering connection closes
        self.lost = False

    # ---------------------------------------------------------------- the connection's life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.socket_transport = transport
        super().connection_made(_Closer(transport, self))  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            self.refuse(503, f"the server has {self.limits.max_connections} connections open; retry shortly")
            return
        self.wait_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._unset_keepalive_if_required()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # after an early answer: read and throw away, while the bytes keep coming
            self.arm_linger()
            return
        if self.idle:  # the next request's first bytes: its head must all come within the read timeout
            self.idle = False
            self.arm(self.limits.read_timeout_s, self.head_timed_out)
        head_began_earlier = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no WebSockets here: the request is answered as plain HTTP
        except httptools.HttpParserError as err:
            refusal = err.__context__
            if not isinstance(refusal, Refusal):
                refusal = Refusal(400, f"the request is not valid HTTP/1.1 ({err})")
            self.refuse(refusal.status, str(refusal))
            return
        if self.in_head and head_began_earlier:  # a header line too long to be complete yet
            self.raw_head_bytes += len(data)
            if self.raw_head_bytes > self.limits.max_header_bytes:
                self.refuse(431, self.too_large_head())

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, or arms its keep-alive timer
        if self.lingering or self.timeout_keep_alive_task is None:
            return  # closing, or a pipelined request runs now
        if self.in_head:  # the next request's head began while this one ran
            self.arm(self.limits.read_timeout_s, self.head_timed_out)
        else:
            self.wait_idle()

    # ---------------------------------------------------------------- the parser's callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = self.message_open = True
        self.head_bytes = self.raw_head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._unset_keepalive_if_required()  # the head arrived in time; the app times the body
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.message_open = False
        super().on_message_complete()

    def count_head(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > self.limits.max_header_bytes:
            raise Refusal(431, self.too_large_head())

    def too_large_head(self) -> str:
        return f"the request line and headers are over the limit of {self.limits.max_header_bytes:,} bytes"

    # ---------------------------------------------------------------- deadlines

    def arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._unset_keepalive_if_required()  # one timer per connection, in uvicorn's own slot
        self.timeout_keep_alive_task = self.loop.call_later(seconds, callback)

    def wait_idle(self) -> None:
        self.idle = True
        self.arm(self.limits.keep_alive_s, self.hard_close)

    def head_timed_out(self) -> None:
        self.timeout_keep_alive_task = None
        if self.in_head:
            self.refuse(408, f"the request head took longer than {self.limits.read_timeout_s:g} s to arrive")
        else:
            self.hard_close()

    # ---------------------------------------------------------------- answering and closing

    def refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON error from here, below the app, then close (lingering)."""
        transport = self.socket_transport
        if transport is None or transport.is_closing() or self.lingering:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # half an answer is out: nothing valid can follow it
                self.hard_close()
                return
            cycle.disconnected = True  # the app's next receive() says the client went; its send is dropped
            cycle.message_event.set()
        self.logger.info("%s:%d - refused %d: %s", *(self.client or ("?", 0)), status, message)
        body = orjson.dumps({"error": message})
        head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        transport.write(STATUS_LINE[status] + head % len(body) + body)
        self.linger()

    def soft_close(self) -> None:
        """What uvicorn's ``transport.close()`` does here: linger while the client may still be sending
        the request we answered, close at once otherwise."""
        if self.lingering:
            return  # the linger's own bounds close it
        if self.lost or not self.message_open:
            self.hard_close()
        else:
            self.linger()

    def linger(self) -> None:
        transport = self.socket_transport
        assert transport is not None
        self.lingering = True
        self.linger_until = self.loop.time() + self.limits.linger_s
        self.arm_linger()
        self.flow.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()  # after what is buffered: the client reads our answer, then end of file
        # the client's own end of file closes us: eof_received returns None

    def arm_linger(self) -> None:
        """Close after ``linger_idle_s`` without a byte, and at ``linger_until`` at the latest."""
        left = self.linger_until - self.loop.time()
        if left <= 0:
            self.hard_close()
        else:
            self.arm(min(self.limits.linger_idle_s, left), self.hard_close)

    def hard_close(self) -> None:
        self._unset_keepalive_if_required()
        if self.socket_transport is not None and not self.socket_transport.is_closing():
            self.socket_transport.close()


class _Closer:
    """The transport as uvicorn's protocol sees it: ``close()`` goes through ``Connection.soft_close``,
    and a lingering connection reports itself closing, so that uvicorn starts nothing more on it."""

    def __init__(self, transport: asyncio.Transport, connection: Connection) -> None:
        self._transport = transport
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._connection.soft_close()

    def is_closing(self) -> bool:
        return self._connection.lingering or self._transport.is_closing()


# ---------------------------------------------------------------- serve


def load_models(specs: list[str], log: Callable[[str], None]) -> dict[str, Model]:
    """Each NAME=PATH, PATH (named after its run folder), or folder of checkpoints, loaded and checked."""
    models: dict[str, Model] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path_obj = Path(path)
        if path_obj.is_dir():
            if name:
                raise InvalidValue(f"{spec}: NAME= names one checkpoint, and {path} is a folder")
            found = checkpoints_in(path_obj)
        else:
            found = [(name or (path_obj.parent.name if path_obj.parent.name else path_obj.stem), path_obj)]
        for model_name, model_path in found:
            if model_name in models:
                raise InvalidValue(f"two models are named {model_name!r}; name them with NAME=PATH")
            models[model_name] = load_model(model_name, model_path)
            log(f"model {model_name}: {model_path} ({models[model_name].architecture})")
    return models


def checkpoints_in(folder: Path) -> list[tuple[str, Path]]:
    """A folder's checkpoints, each under its name: NAME.npz in it, and NAME/best.npz (a runs/ folder).
    The layout KServe mounts at /mnt/models, and the one `train` writes under runs/."""
    found = [(p.stem, p) for p in sorted(folder.glob("*.npz")) if p.is_file()]
    found += [(p.parent.name, p) for p in sorted(folder.glob("*/best.npz")) if p.is_file()]
    if not found:
        raise InvalidValue(f"{folder}: no checkpoints in this folder (NAME.npz, or NAME/best.npz)")
    return found


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; port 0 takes a free port, which the socket then reports."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:
        raise OSError(f"cannot listen on {host} port {port}: {err.strerror or err}") from None


def serve(
    specs: list[str],
    host: str,
    port: int,
    limits: Limits,
    log: Callable[[str], None] = print,
    grace_s: float = 30.0,
    metrics: bool = True,
    access_log: bool = True,
) -> None:
    """Load every checkpoint and serve them until SIGTERM or Ctrl-C. The first line logged after the
    models names the address, with the port actually bound (``--port 0`` picks a free one).

    On SIGTERM or SIGINT, uvicorn closes the listening socket (new connections are refused), closes
    idle connections, lets the requests in flight finish for up to ``grace_s``, cancels what is left,
    and the process ends by the signal it got, as Kubernetes expects of a pod being replaced."""
    import uvicorn

    models = load_models(specs, log)
    app = create_app(models, limits, with_metrics=metrics)
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    address = f"[{host}]" if ":" in host else host
    names = ", ".join(models)
    log(f"{time.strftime('%H:%M:%S')} serving {names} on http://{address}:{bound}/ (Ctrl-C to stop)")
    config = uvicorn.Config(
        app,
        http=functools.partial(Connection, limits=limits),  # type: ignore[arg-type]
        timeout_keep_alive=int(max(1, limits.keep_alive_s)),  # ours arms its own timer, to the fraction
        log_level="info",
        access_log=access_log,
        timeout_graceful_shutdown=grace_s,  # type: ignore[arg-type]  # uvicorn waits with asyncio.wait_for
        lifespan="off",
        ws="none",  # no WebSockets here: an Upgrade request is answered as plain HTTP
    )
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
