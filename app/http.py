"""Transport: one pooled session per provider, a fast path beside it, deadlines, size caps, and the
one place transport errors become proxy errors.

Fast path. `Session.request` costs about 0.35 ms of CPU per call (it re-reads the proxy environment,
looks for a .netrc, merges settings and builds two request and two response objects). `Transport.post`
instead resolves, once per URL, the urllib3 pool that the session's mounted adapter would use (same
pool, TLS settings and Retry) and posts through it. URLs that a proxy or a .netrc entry applies to, or
that redirect, keep going through the session. The cache of routes lives in the Transport.

Our pools and connections are public extension points: `ProxyAdapter.init_poolmanager` gives the
PoolManager our HTTPConnectionPool subclasses (`pool_classes_by_scheme`), whose `ConnectionCls` sends a
small request in one write and tells the Watchdog which connection the calling thread is using, and whose
`QueueCls` keeps idle connections only (no placeholders: a pool as large as a worker's threads is free).

Deadlines. A socket timeout bounds one read, not an answer: an upstream that trickles a byte a second
never trips it. So every call has a Deadline: `http.read_timeout` for a whole plain answer (headers
and body), for a stream the earlier of `http.stream_idle_timeout` after the last data event and
`http.stream_max_seconds` after the start. One Watchdog thread per SessionPool looks at the live
deadlines every TICK and shuts down the socket of any call past its own; the blocked read then fails
and is reported as UpstreamTimeout. Per call that costs a set insert and removal under a lock.
"""

from __future__ import annotations

import contextlib
import http.client
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import requests
import urllib3
import urllib3.connection
from requests.adapters import HTTPAdapter
from requests.utils import get_netrc_auth, select_proxy
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.retry import Retry

from app.config import HttpConfig
from app.errors import UpstreamError, UpstreamTimeout
from app.sse import LineTooLong, SSEEvent, iter_sse

READ_SIZE = 65536

# Everything a read or a write on an upstream connection can raise (urllib3 wraps most of it).
TRANSPORT_ERRORS = (
    urllib3.exceptions.HTTPError,
    requests.RequestException,
    http.client.HTTPException,
    OSError,
)


class SizedBody(Protocol):
    """A request body sent as it is read (an upload), whose length is known beforehand."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[bytes]: ...


# --- deadlines ------------------------------------------------------------------------------


class Deadline:
    """When one call must be over; `when` may move (a stream's data events push it on)."""

    __slots__ = ("connection", "end", "expired", "generation", "when")

    def __init__(self, when: float, end: float) -> None:
        self.when = when
        self.end = end  # when can move up to here, never beyond
        self.expired = False
        self.connection: Any = None  # the urllib3 connection the call is using, once it has one
        self.generation = 0  # that connection's request count when it was attached


class Watchdog:
    """One thread that shuts down the socket of every call past its deadline.

    It checks the live deadlines every TICK (so a deadline fires at most TICK late), and ends itself
    after IDLE seconds without one; `arm` starts it again (also in a forked worker, where the parent's
    thread does not exist)."""

    TICK = 0.1
    IDLE = 5.0

    def __init__(self) -> None:
        self._live: set[Deadline] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._local = threading.local()  # the deadline of the call the current thread is making

    def arm(self, when: float, end: float) -> Deadline:
        """A live deadline; until `leave()`, connections that start a request in this thread are
        attached to it."""
        deadline = Deadline(when, end)
        self._local.deadline = deadline
        with self._lock:
            self._live.add(deadline)
            thread = self._thread
            if thread is None or not thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="ai-proxy-watchdog", daemon=True)
                self._thread.start()
        return deadline

    def leave(self) -> None:
        """The calling thread is done starting its call (the answer's headers are in)."""
        self._local.deadline = None

    def disarm(self, deadline: Deadline) -> None:
        with self._lock:
            self._live.discard(deadline)

    def attach(self, connection: Any) -> None:
        """Called by a connection as it starts a request: it now belongs to this thread's call (if
        any), and whatever deadline it served before no longer concerns it."""
        deadline = self._local.__dict__.get("deadline")
        with self._lock:
            connection.generation = getattr(connection, "generation", 0) + 1
            if deadline is not None:
                deadline.connection, deadline.generation = connection, connection.generation
                if deadline.expired:
                    self._shut(deadline)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while not self._stop.wait(self.TICK):
            now = time.monotonic()
            with self._lock:
                for deadline in [d for d in self._live if d.when <= now]:
                    self._live.discard(deadline)
                    deadline.expired = True
                    self._shut(deadline)
                if self._live:
                    idle_since = now
                elif now - idle_since >= self.IDLE:
                    self._thread = None
                    return

    @staticmethod
    def _shut(deadline: Deadline) -> None:
        """Wake the blocked read of an expired call, unless its connection has moved on to another
        call (its generation changed: it went back to the pool and was taken again)."""
        connection = deadline.connection
        if connection is None or connection.generation != deadline.generation:
            return
        sock = connection.answer_socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# --- connections, pools, adapter ------------------------------------------------------------


class WatchedConnection:
    """A connection mixin: tells the watchdog whose call it serves, and sends a request of at most
    64 KiB (every chat request) in one write. urllib3 writes the header block and the body with two
    send() calls: two syscalls, two TCP segments (TLS records) and a GIL handoff each."""

    watchdog: Watchdog
    answer_socket: socket.socket | None = None
    _held: bytes | None = None
    _hold = False

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        self.watchdog.attach(self)
        self._hold = isinstance(body, bytes) and 0 < len(body) <= 65536 and not kwargs.get("chunked")
        try:
            super().request(method, url, body=body, headers=headers, **kwargs)  # type: ignore[misc]
            if self._held is not None:
                self._hold = False
                super().send(self._held)  # type: ignore[misc]
        finally:
            self._hold, self._held = False, None

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        # http.client drops `sock` from a connection whose answer ends at close, though the answer
        # still reads from it: keep our own reference for the watchdog.
        self.answer_socket = self.sock  # type: ignore[attr-defined]
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]

    def send(self, data: Any) -> None:
        if self._hold:
            if self._held is None:  # the header block: wait for the body
                self._held = data
                return
            data, self._held, self._hold = self._held + data, None, False
        super().send(data)  # type: ignore[misc]


class IdleConnections(queue.LifoQueue):
    """A pool's idle connections, without the placeholders (None) urllib3 fills a new pool with, one per
    `maxsize`: a pool that finds no idle connection opens one all the same (pool_block=False), and a
    large `http.pool_maxsize` (at least a worker's threads) then costs nothing up front (4,096
    placeholders took 5 to 20 ms per upstream host on a 2-core machine)."""

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            super().put(item, block, timeout)


def pool_classes(watchdog: Watchdog) -> dict[str, type[urllib3.HTTPConnectionPool]]:
    """urllib3 pool classes (by scheme) whose connections report to `watchdog`."""

    class HTTPConnection(WatchedConnection, urllib3.connection.HTTPConnection):
        pass

    class HTTPSConnection(WatchedConnection, urllib3.connection.HTTPSConnection):
        pass

    HTTPConnection.watchdog = HTTPSConnection.watchdog = watchdog

    class HTTPConnectionPool(urllib3.HTTPConnectionPool):
        ConnectionCls = HTTPConnection
        QueueCls = IdleConnections

    class HTTPSConnectionPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = HTTPSConnection
        QueueCls = IdleConnections

    return {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}


class ProxyAdapter(HTTPAdapter):
    """requests' adapter whose pool managers (direct and through an HTTP proxy) build our pools."""

    def __init__(self, watchdog: Watchdog, **kwargs: Any) -> None:
        self.pool_classes = pool_classes(watchdog)  # before super(), which calls init_poolmanager
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = self.pool_classes

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> urllib3.PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is urllib3.ProxyManager:  # a SOCKS manager keeps its own connection classes
            manager.pool_classes_by_scheme = self.pool_classes
        return manager


def make_session(http: HttpConfig, watchdog: Watchdog, verify: bool | str | None = None) -> requests.Session:
    """A pooled session: keep-alive connections, no urllib3 retries (the router retries), proxy/TLS."""
    session = requests.Session()
    adapter = ProxyAdapter(
        watchdog,
        pool_connections=http.pool_connections,
        pool_maxsize=http.pool_maxsize,
        max_retries=Retry(total=0, connect=0, read=0, redirect=0, raise_on_status=False),
        pool_block=False,
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = http.verify if verify is None else verify
    # The environment's proxy settings apply only when no proxy is configured; an explicit one wins.
    if http.proxy:
        session.proxies = {"http": http.proxy, "https": http.proxy}
        session.trust_env = False
    session.headers.clear()
    session.headers["User-Agent"] = "ai-proxy"
    session.headers["Accept-Encoding"] = "gzip, deflate"
    return session


# --- the transport --------------------------------------------------------------------------


class Route:
    """How to reach one URL through the session's own pool without `Session.request`."""

    __slots__ = ("adapter", "headers", "path", "pool", "request", "verify")

    def __init__(self, session: requests.Session, url: str, verify: bool | str) -> None:
        request = requests.Request("POST", url).prepare()
        self.request = request
        self.adapter: HTTPAdapter = session.get_adapter(request.url)  # type: ignore[assignment]
        self.verify = verify  # the session's, or the environment's CA bundle
        self.path = request.path_url
        self.headers = {k: v for k, v in session.headers.items() if v is not None}
        self.fetch_pool()

    def fetch_pool(self) -> urllib3.HTTPConnectionPool:
        """The adapter's pool for this URL (again after the pool manager closed an old one)."""
        self.pool = self.adapter.get_connection_with_tls_context(self.request, self.verify, None, None)
        return self.pool


class Transport:
    """POSTs to one provider's upstreams with the deadlines and caps of `http`."""

    def __init__(self, session: requests.Session, http: HttpConfig, watchdog: Watchdog) -> None:
        self.session = session
        self.http = http
        self.watchdog = watchdog
        self._routes: dict[str, Route | None] = {}
        self._plain_timeout = urllib3.Timeout(connect=http.connect_timeout, read=http.read_timeout)
        self._stream_timeout = urllib3.Timeout(connect=http.connect_timeout, read=http.stream_idle_timeout)

    def post(
        self, url: str, *, data: bytes | SizedBody, headers: Mapping[str, str], stream: bool, model_name: str
    ) -> UpstreamResponse:
        """POST; the answer's headers are read, its body is left for UpstreamResponse to read. A
        SizedBody goes as it is read, with its Content-Length; the deadline covers the upload too."""
        if not isinstance(data, bytes):
            headers = {**headers, "Content-Length": str(len(data))}
        http = self.http
        start = time.monotonic()
        end = start + (http.stream_max_seconds if stream else http.read_timeout)
        deadline = self.watchdog.arm(min(start + http.stream_idle_timeout, end) if stream else end, end)
        try:
            raw = self._open(url, data, headers, stream)
        except TRANSPORT_ERRORS as exc:
            self.watchdog.disarm(deadline)
            raise transport_error(exc, model_name, deadline, http, stream=stream, answered=False) from None
        finally:
            self.watchdog.leave()
        return UpstreamResponse(raw, self, deadline, stream, model_name)

    def _open(self, url: str, data: bytes | SizedBody, headers: Mapping[str, str], stream: bool) -> Any:
        route = self._route(url)
        if route is None:
            return self._through_session(url, data, headers, stream)
        for attempt in (1, 2):
            try:
                raw = route.pool.urlopen(
                    "POST",
                    route.path,
                    body=data,
                    headers={**route.headers, **headers},
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                    decode_content=True,
                    retries=route.adapter.max_retries,
                    timeout=self._stream_timeout if stream else self._plain_timeout,
                )
                break
            except ClosedPoolError:  # the pool manager dropped this pool (it keeps pool_connections)
                if attempt == 2:
                    raise
                route.fetch_pool()
        if raw.get_redirect_location():  # requests follows redirects: let it, for this URL from now on
            raw.drain_conn()
            raw.release_conn()
            self._routes[url] = None
            return self._through_session(url, data, headers, stream)
        return raw

    def _through_session(
        self, url: str, data: bytes | SizedBody, headers: Mapping[str, str], stream: bool
    ) -> Any:
        timeout = self._stream_timeout if stream else self._plain_timeout
        response = self.session.post(
            url,
            data=data,
            headers=headers,
            timeout=(timeout.connect_timeout, timeout.read_timeout),
            stream=True,
        )
        return response.raw

    def _route(self, url: str) -> Route | None:
        """The cached route for `url`, or None when the session must handle it (proxy, .netrc,
        another adapter, a client certificate, cookies or auth on the session)."""
        try:
            return self._routes[url]
        except KeyError:
            pass
        session = self.session
        route: Route | None = None
        adapter = session.get_adapter(url)
        plain = (
            isinstance(adapter, ProxyAdapter)
            and not session.cert
            and not session.cookies
            and not session.auth
        )
        if plain:
            settings = session.merge_environment_settings(url, {}, None, None, None)
            netrc = session.trust_env and get_netrc_auth(url)
            if not select_proxy(url, settings["proxies"]) and not netrc:
                route = Route(session, url, settings["verify"])
        self._routes[url] = route
        return route


class UpstreamResponse:
    """An upstream's answer whose body is read within the call's deadline and `max_response_bytes`."""

    __slots__ = ("_deadline", "_model", "_stream", "_transport", "headers", "raw", "status_code")

    def __init__(
        self, raw: Any, transport: Transport, deadline: Deadline, stream: bool, model_name: str
    ) -> None:
        self.raw = raw
        self.status_code: int = raw.status
        self.headers = raw.headers  # case-insensitive, like requests' headers
        self._transport = transport
        self._deadline = deadline
        self._stream = stream
        self._model = model_name

    def read(self) -> bytes:
        """The whole (decoded) body. Raises UpstreamError beyond the cap, UpstreamTimeout past the
        deadline; the connection goes back to the pool when the body was read to its end."""
        raw = self.raw
        length = raw.length_remaining
        if length is None or "content-encoding" in raw.headers:
            data = b"".join(self._chunks())
        else:
            if length > self._transport.http.max_response_bytes:
                self.close()
                raise self._too_large()
            try:
                data = raw.read()  # one read, as long as the header said
            except TRANSPORT_ERRORS as exc:
                raise self._failed(exc) from None
            if self._deadline.expired:
                raise self._failed(TimeoutError())
        self._transport.watchdog.disarm(self._deadline)
        return data

    def error_body(self, limit: int) -> bytes:
        """At most `limit` bytes of an error answer (never an error itself); closes it."""
        try:
            return (
                self.raw.read(min(limit, self._transport.http.max_response_bytes), decode_content=True) or b""
            )
        except TRANSPORT_ERRORS:
            return b""
        finally:
            self.close()

    def events(self) -> Iterator[SSEEvent]:
        """The stream's SSE events. Only data events (not comments or blank lines) move the idle
        deadline on; the whole stream ends by `stream_max_seconds`."""
        http = self._transport.http
        deadline, idle = self._deadline, http.stream_idle_timeout
        end = deadline.end
        clock = time.monotonic
        try:
            for event in iter_sse(self._chunks(), http.max_sse_line_bytes):
                deadline.when = min(clock() + idle, end)
                yield event
        except LineTooLong:
            self.close()
            raise UpstreamError(
                f"Upstream stream for model {self._model} sent a line longer than "
                f"http.max_sse_line_bytes ({http.max_sse_line_bytes} bytes)"
            ) from None

    def _chunks(self) -> Iterator[bytes]:
        """Decoded bytes as they arrive (read1: no waiting to fill a buffer), at most the cap in all."""
        read1 = self.raw.read1
        left = self._transport.http.max_response_bytes
        try:
            while chunk := read1(READ_SIZE, decode_content=True):
                left -= len(chunk)
                if left < 0:
                    raise self._too_large()
                yield chunk
        except TRANSPORT_ERRORS as exc:
            raise self._failed(exc) from None
        except UpstreamError:
            self.close()
            raise
        if self._deadline.expired:  # a close-delimited body cut by the watchdog looks complete
            raise self._failed(TimeoutError())

    def _too_large(self) -> UpstreamError:
        cap = self._transport.http.max_response_bytes
        what = "stream" if self._stream else "answer"
        return UpstreamError(
            f"Upstream {what} for model {self._model} is larger than http.max_response_bytes ({cap} bytes)"
        )

    def _failed(self, exc: BaseException) -> UpstreamError:
        self.close()
        http = self._transport.http
        return transport_error(exc, self._model, self._deadline, http, stream=self._stream, answered=True)

    def release(self, wait: float = 0.05, most: int = 65536) -> None:
        """A streamed answer has sent its last event: read what is left of its body (normally just the
        chunked-encoding terminator, already on its way) so that urllib3 puts the connection back in
        the pool for the next call. Otherwise closing the response would drop it, and every stream
        would pay for a new TCP (and TLS) handshake. Waits at most `wait` seconds and reads at most
        `most` bytes; when that is not enough the connection is just closed."""
        self._transport.watchdog.disarm(self._deadline)
        raw = self.raw
        connection = raw.connection
        sock = getattr(connection, "sock", None)
        if sock is None:  # already back in the pool, or closed
            return
        try:
            sock.settimeout(wait)  # urllib3 sets the timeout again before the connection's next request
            left = most
            while chunk := raw.read1(left, decode_content=True):
                left -= len(chunk)
                if left <= 0:
                    self.close()
                    return
        except Exception:  # whatever went wrong, the connection is not reused
            self.close()

    def close(self) -> None:
        """As requests does: drop the connection if the body was not read to its end, else free it."""
        self._transport.watchdog.disarm(self._deadline)
        self.raw.close()
        self.raw.release_conn()

    def abort(self) -> None:
        """Close, waking a read blocked on this answer in another thread. urllib3 refuses
        (RuntimeError/ValueError) once the connection is back in its pool: nothing to wake then."""
        with contextlib.suppress(AttributeError, OSError, RuntimeError, ValueError):
            self.raw.shutdown()
        self.close()

    def __enter__(self) -> UpstreamResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SessionPool:
    """One session and transport per (provider, TLS setting), created at start and shared by all
    threads, and the watchdog they share."""

    def __init__(self, http: HttpConfig) -> None:
        self.http = http
        self.watchdog = Watchdog()
        self._transports: dict[tuple[str, Any], Transport] = {}

    def transport(self, provider: str, verify: bool | str | None = None) -> Transport:
        key = (provider, verify)
        found = self._transports.get(key)
        if found is None:
            session = make_session(self.http, self.watchdog, verify)
            found = self._transports[key] = Transport(session, self.http, self.watchdog)
        return found

    def get(self, provider: str, verify: bool | str | None = None) -> requests.Session:
        return self.transport(provider, verify).session

    def close(self) -> None:
        for transport in self._transports.values():
            transport.session.close()
        self.watchdog.stop()


# --- the one error mapping ------------------------------------------------------------------


def transport_error(
    exc: BaseException, model_name: str, deadline: Deadline, http: HttpConfig, *, stream: bool, answered: bool
) -> UpstreamError:
    """A transport failure as a proxy error. The text names the model, never the URL or a header."""
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    elif isinstance(exc, requests.RequestException) and exc.args and isinstance(exc.args[0], MaxRetryError):
        exc = exc.args[0].reason or exc
    what = "stream" if stream else "answer"
    if deadline.expired or isinstance(exc, ReadTimeoutError | TimeoutError | requests.ReadTimeout):
        if not stream:
            bound = f"http.read_timeout ({http.read_timeout:g} s)"
        elif deadline.when >= deadline.end:
            bound = f"http.stream_max_seconds ({http.stream_max_seconds:g} s)"
        else:
            bound = f"http.stream_idle_timeout ({http.stream_idle_timeout:g} s) without a data event"
        return UpstreamTimeout(f"Upstream {what} for model {model_name} timed out: {bound}")
    if isinstance(exc, ConnectTimeoutError | requests.ConnectTimeout) and not isinstance(
        exc, NewConnectionError
    ):
        return UpstreamTimeout(f"Upstream for model {model_name} timed out connecting")
    if isinstance(exc, SSLError | ssl.SSLError | requests.exceptions.SSLError) and not answered:
        return UpstreamError(f"TLS error talking to the upstream of model {model_name}")
    if isinstance(exc, ProxyError):
        return UpstreamError(f"Could not reach the upstream of model {model_name} through the proxy")
    if answered:
        return UpstreamError(f"Upstream {what} for model {model_name} broke off")
    return UpstreamError(f"Could not connect to the upstream of model {model_name}")
