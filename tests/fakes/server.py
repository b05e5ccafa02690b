"""A scriptable fake upstream: a real HTTP/1.1 server on 127.0.0.1 in a background thread.

Build a provider fake by subclassing `FakeServer` and registering routes::

    class FakeGemini(FakeServer):
        def __init__(self) -> None:
            super().__init__()
            self.add_route("generate", "POST",
                           re.compile(r"/v1beta/models/(?P<model>[^/:]+):generateContent"),
                           self._generate)

        def _generate(self, req: Recorded) -> Behavior:
            return Behavior(json={"model": req.params["model"]})

Tests then script answers per route (FIFO), falling back to the route's default::

    with FakeGemini() as fake:
        fake.push("generate", Behavior(status=429, json={...}), Behavior(drop=True))
        ...
        assert fake.requests[0].json == {...}
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from traceback import format_exc
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from requests.structures import CaseInsensitiveDict

__all__ = ["Behavior", "FakeServer", "Recorded", "Responder", "Route", "sse", "sse_comment"]

STREAM_CONTENT_TYPE = "text/event-stream; charset=utf-8"
DEFAULT_STALL_SECONDS = 60.0


@dataclass
class Recorded:
    """One request as the fake received it, plus when each part of the answer went out.

    `query` keeps the last value of each parameter; `params` holds the named groups of a regex route.
    `client_port` tells connections apart (keep-alive/pool reuse). The server fills `headers_sent_at` /
    `sent_at` (one `time.monotonic()` per body piece or SSE event,
    taken right after it was flushed) and `client_gone` (the client closed while we were writing).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: CaseInsensitiveDict[str]
    body: bytes
    json: Any
    received_at: float
    client_port: int
    route: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers_sent_at: float | None = None
    sent_at: list[float] = field(default_factory=list)
    client_gone: bool = False


@dataclass
class Behavior:
    """What the fake does with one request.

    Body: at most one of `json` (serialised), `body` (raw bytes) or `events` (SSE: each item is one raw
    event such as ``b'data: {...}\\n\\n'``, sent as its own HTTP chunk and flushed, with `chunk_delay`
    seconds between events). Timing and faults:
      - `delay`: seconds before the status line is sent;
      - `drop`: close the connection without any response;
      - `drop_after`: after N body pieces (events, or 1 for a plain body) close abruptly, no terminator;
      - `stall_after`: after N pieces stop sending for `stall_for` seconds (aborted at once by
        `FakeServer.stop()`), then go on.
    All waits end early when the server stops; the connection is then closed.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    body: bytes | None = None
    events: list[bytes] | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    drop: bool = False
    drop_after: int | None = None
    stall_after: int | None = None
    stall_for: float = DEFAULT_STALL_SECONDS

    def __post_init__(self) -> None:
        given = [x for x in (self.json, self.body, self.events) if x is not None]
        if len(given) > 1:
            raise ValueError("Behavior takes at most one of json, body, events")

    @property
    def streaming(self) -> bool:
        return self.events is not None

    def pieces(self) -> list[bytes]:
        """The body as the list of pieces written one by one."""
        if self.events is not None:
            return list(self.events)
        if self.json is not None:
            return [json.dumps(self.json).encode()]
        return [self.body] if self.body else []

    def content_type(self) -> str:
        if self.events is not None:
            return STREAM_CONTENT_TYPE
        return "application/json" if self.json is not None else "application/octet-stream"


Responder = Behavior | Callable[[Recorded], Behavior]
"""A fixed `Behavior`, or a function computing one from the request."""

PathMatcher = str | re.Pattern[str] | Callable[[str], bool]


@dataclass
class Route:
    """`method` ("*" for any) and `path`: a prefix string, a regex (full match; named groups become
    `Recorded.params`) or a predicate on the path. `default` answers when nothing is scripted."""

    name: str
    method: str
    path: PathMatcher
    default: Responder
    script: deque[Responder] = field(default_factory=deque)

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("*", method):
            return None
        if isinstance(self.path, str):
            return {} if path.startswith(self.path) else None
        if isinstance(self.path, re.Pattern):
            m = self.path.fullmatch(path)
            return m.groupdict() if m else None
        return {} if self.path(path) else None


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event: `data` is JSON-encoded compactly unless it is already a str."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def sse_comment(text: str) -> bytes:
    """An SSE comment line (ignored by clients, used as keep-alive)."""
    return f": {text}\n\n".encode()


class _Stopped(Exception):
    """The server is stopping: abandon the current response."""


class FakeServer(ThreadingHTTPServer):
    """Threaded HTTP/1.1 server with routes, per-route scripts and a request log.

    Unmatched requests get 404 `{"error": "no fake route for METHOD PATH"}`.
    """

    daemon_threads = True
    request_queue_size = 128  # socketserver's default backlog of 5 resets connections under bursts

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.port: int = self.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.routes: dict[str, Route] = {}
        self._requests: list[Recorded] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    # -- configuration --------------------------------------------------------------------------

    def add_route(self, name: str, method: str, path: PathMatcher, default: Responder) -> Route:
        """Register a route; routes are tried in registration order."""
        route = Route(name, method.upper(), path, default)
        self.routes[name] = route
        return route

    def push(self, route: str, *responders: Responder) -> None:
        """Answer the next requests on `route` with these, in order, then fall back to the default."""
        with self._cond:
            self.routes[route].script.extend(responders)

    def set_default(self, route: str, responder: Responder) -> None:
        """Answer every unscripted request on `route` with `responder`."""
        with self._cond:
            self.routes[route].default = responder

    def before(self, req: Recorded, route: Route) -> Behavior | None:
        """Hook run before the script: return a Behavior to answer instead (e.g. a failed auth)."""
        return None

    # -- inspection -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of every request received so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    def requests_for(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def wait_for_requests(self, count: int, timeout: float = 5.0, route: str | None = None) -> list[Recorded]:
        """Block until at least `count` requests (on `route`, if given) arrived; TimeoutError otherwise."""

        def seen() -> list[Recorded]:
            return [r for r in self._requests if route is None or r.route == route]

        with self._cond:
            if not self._cond.wait_for(lambda: len(seen()) >= count, timeout):
                raise TimeoutError(f"got {len(seen())} requests, expected {count}")
            return seen()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, abort pending delays/stalls and close every open connection."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals used by the handler ----------------------------------------------------------

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._cond:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _record(self, req: Recorded) -> None:
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()

    def _dispatch(self, req: Recorded) -> Behavior:
        for route in list(self.routes.values()):
            params = route.match(req.method, req.path)
            if params is None:
                continue
            req.route, req.params = route.name, params
            self._record(req)
            early = self.before(req, route)
            if early is not None:
                return early
            with self._cond:
                responder = route.script.popleft() if route.script else route.default
            return responder if isinstance(responder, Behavior) else responder(req)
        self._record(req)
        return Behavior(status=404, json={"error": f"no fake route for {req.method} {req.path}"})

    def _wait(self, seconds: float) -> None:
        """Sleep `seconds`, raising `_Stopped` as soon as the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)
        if self._stopping.is_set():
            raise _Stopped


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: FakeServer

    def setup(self) -> None:
        super().setup()
        self.server._track(self.connection, alive=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server._track(self.connection, alive=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def handle_one_request(self) -> None:
        """Parse like the base class, then hand every method to `_serve`."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except OSError:
            self.close_connection = True
            return
        if not self.raw_requestline or not self.parse_request():
            self.close_connection = True
            return
        self._serve()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return b"".join(_read_chunks(self.rfile))
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        req = Recorded(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers=CaseInsensitiveDict(self.headers.items()),
            body=body,
            json=parsed,
            received_at=time.monotonic(),
            client_port=self.client_address[1],
        )
        try:
            try:
                behavior = self.server._dispatch(req)
            except Exception:  # a broken test responder: tell the client instead of hanging up
                failure = {"error": "fake responder failed", "traceback": format_exc()}
                behavior = Behavior(status=500, json=failure)
            self._respond(req, behavior)
        except _Stopped:
            self.close_connection = True
        except ConnectionError:
            req.client_gone = not self.server._stopping.is_set()
            self.close_connection = True

    def _respond(self, req: Recorded, b: Behavior) -> None:
        srv = self.server
        srv._wait(b.delay)
        if b.drop:
            self.close_connection = True
            return
        pieces = b.pieces()
        self.send_response(b.status)
        headers = CaseInsensitiveDict({"Content-Type": b.content_type(), **b.headers})
        if b.streaming:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(sum(map(len, pieces)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()
        req.headers_sent_at = time.monotonic()
        for i in range(len(pieces) + 1):  # i == len(pieces) is the end of the body
            if i == b.stall_after:
                srv._wait(b.stall_for)
            if i == b.drop_after:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if i == len(pieces):
                break
            if i and b.chunk_delay:
                srv._wait(b.chunk_delay)
            self.wfile.write(_chunk(pieces[i]) if b.streaming else pieces[i])
            self.wfile.flush()
            req.sent_at.append(time.monotonic())
        if b.streaming:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _read_chunks(rfile: Any) -> Iterable[bytes]:
    """Decode a chunked request body."""
    while True:
        size = int(rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return
        yield rfile.read(size)
        rfile.readline()
