"""Transport: one tuned `requests.Session` per provider, and the one place requests errors are mapped.

The hot path skips `Session.request`: per call it re-reads the proxy environment, looks for a
.netrc, merges settings and cookies and builds two request and two response objects, about 0.35 ms
of CPU (more than everything else the proxy does for a request). `send` instead resolves, once per
URL, the urllib3 pool that the session's own HTTPAdapter would use (same pool, same TLS settings,
same Retry) and posts through it. URLs that a proxy or a .netrc entry applies to, or that redirect,
keep going through the session, unchanged.
"""

from __future__ import annotations

import email.parser
import http.client
import types
from collections.abc import Mapping
from typing import Any

import requests
import urllib3
import urllib3.connection
from requests.adapters import HTTPAdapter
from requests.utils import get_netrc_auth, select_proxy
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.retry import Retry

from app.config import HttpConfig
from app.errors import UpstreamError, UpstreamTimeout


def make_session(http: HttpConfig, verify: bool | str | None = None) -> requests.Session:
    """A pooled session: keep-alive connections, no urllib3 retries (the router retries), proxy/TLS."""
    session = requests.Session()
    adapter = HTTPAdapter(
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


class SessionPool:
    """One session per (provider, TLS setting), created at start and shared by all threads."""

    def __init__(self, http: HttpConfig) -> None:
        self.http = http
        self._sessions: dict[tuple[str, Any], requests.Session] = {}

    def get(self, provider: str, verify: bool | str | None = None) -> requests.Session:
        key = (provider, verify)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = make_session(self.http, verify)
        return session

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()


class UpstreamResponse:
    """The parts of a `requests.Response` the providers use, over urllib3's response (`raw`)."""

    __slots__ = ("headers", "raw", "status_code")

    def __init__(self, raw: urllib3.BaseHTTPResponse) -> None:
        self.raw = raw
        self.status_code = raw.status
        self.headers = raw.headers  # case-insensitive, like requests' headers

    @property
    def content(self) -> bytes:
        return self.raw.data or b""

    def close(self) -> None:
        """As requests does: drop the connection if the body was not read to its end, else free it."""
        self.raw.close()
        self.raw.release_conn()

    def __enter__(self) -> UpstreamResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _OneWrite:
    """urllib3 writes a request's header block and its body with two send() calls: two syscalls, two
    TCP segments (TLS records) and a GIL handoff each. For a body of at most 64 KiB (every chat
    request) this sends them together; anything held is sent before request() returns."""

    _held: bytes | None = None
    _hold = False

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        self._hold = isinstance(body, bytes) and 0 < len(body) <= 65536 and not kwargs.get("chunked")
        try:
            super().request(method, url, body=body, headers=headers, **kwargs)  # type: ignore[misc]
            if self._held is not None:
                self._hold = False
                super().send(self._held)  # type: ignore[misc]
        finally:
            self._hold, self._held = False, None

    def send(self, data: Any) -> None:
        if self._hold:
            if self._held is None:  # the header block: wait for the body
                self._held = data
                return
            data, self._held, self._hold = self._held + data, None, False
        super().send(data)  # type: ignore[misc]


_END_OF_HEADERS = (b"\r\n", b"\n", b"")


def _parse_headers(fp: Any, _class: type = http.client.HTTPMessage) -> http.client.HTTPMessage:
    """http.client.parse_headers without the email package: the same HTTPMessage (names as sent,
    values with leading blanks and the line end removed, as email's compat32 policy stores them) in
    a quarter of the time. A folded or malformed line hands the whole block to the email parser."""
    lines = http.client._read_headers(fp)  # the same limits on line length and count
    message = _class()
    for line in lines:
        if line in _END_OF_HEADERS:
            break
        text = line.decode("iso-8859-1")
        name, colon, value = text.partition(":")
        if not colon or not name or name[0] in " \t" or " " in name or "\t" in name:
            return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))
        message[name] = value.lstrip(" \t").rstrip("\r\n")
    return message


class _Response(http.client.HTTPResponse):
    """http.client's response whose begin() parses the header block with _parse_headers: the very
    code of HTTPResponse.begin, run with that one global replaced."""

    begin = types.FunctionType(
        http.client.HTTPResponse.begin.__code__,
        {**vars(http.client), "parse_headers": _parse_headers},
        "begin",
        http.client.HTTPResponse.begin.__defaults__,
        http.client.HTTPResponse.begin.__closure__,
    )


class _OneWriteHTTPConnection(_OneWrite, urllib3.connection.HTTPConnection):
    response_class = _Response


class _OneWriteHTTPSConnection(_OneWrite, urllib3.connection.HTTPSConnection):
    response_class = _Response


_ONE_WRITE = {
    urllib3.connection.HTTPConnection: _OneWriteHTTPConnection,
    urllib3.connection.HTTPSConnection: _OneWriteHTTPSConnection,
}


class _Route:
    """How to reach one URL through one session without `Session.request`."""

    __slots__ = ("adapter", "headers", "path", "pool", "request", "verify")

    def __init__(self, session: requests.Session, url: str) -> None:
        request = requests.Request("POST", url).prepare()
        settings = session.merge_environment_settings(request.url, {}, None, None, None)
        self.request = request
        self.adapter: HTTPAdapter = session.get_adapter(request.url)  # type: ignore[assignment]
        self.verify = settings["verify"]
        self.path = request.path_url
        self.headers = {k: v for k, v in session.headers.items() if v is not None}
        self.pool = self._pool()

    def _pool(self) -> urllib3.HTTPConnectionPool:
        pool = self.adapter.get_connection_with_tls_context(self.request, self.verify, None, None)
        pool.ConnectionCls = _ONE_WRITE.get(pool.ConnectionCls, pool.ConnectionCls)  # type: ignore[misc]
        return pool

    def current_pool(self) -> urllib3.HTTPConnectionPool:
        """The pool, fetched again if the pool manager has closed it (it keeps pool_connections)."""
        if self.pool.pool is None:
            self.pool = self._pool()
        return self.pool


def _route(session: requests.Session, url: str) -> _Route | None:
    """The cached route for `url`, or None when the session must handle it (proxy, .netrc, a
    custom adapter or client certificate)."""
    routes = session.__dict__.setdefault("_ai_proxy_routes", {})
    try:
        return routes[url]
    except KeyError:
        pass
    route: _Route | None = None
    adapter = session.get_adapter(url)
    plain = type(adapter) is HTTPAdapter and not session.cert and not session.cookies and not session.auth
    if plain:
        settings = session.merge_environment_settings(url, {}, None, None, None)
        netrc = session.trust_env and get_netrc_auth(url)
        if not select_proxy(url, settings["proxies"]) and not netrc:
            route = _Route(session, url)
    routes[url] = route
    return route


_timeouts: dict[tuple[float, float], urllib3.Timeout] = {}


def _timeout(timeout: tuple[float, float]) -> urllib3.Timeout:
    found = _timeouts.get(timeout)
    if found is None:
        found = _timeouts[timeout] = urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return found


def send(
    session: requests.Session,
    url: str,
    *,
    data: bytes,
    headers: Mapping[str, str],
    timeout: tuple[float, float],
    stream: bool,
    model_name: str,
) -> UpstreamResponse | requests.Response:
    """POST and map transport failures to proxy errors whose text never carries the URL.

    The answer is read whole unless `stream`; a streamed one is decoded (gzip) as it is read."""
    route = _route(session, url)
    if route is None:
        return _send_with_session(session, url, data, headers, timeout, stream, model_name)
    try:
        raw = route.current_pool().urlopen(
            "POST",
            route.path,
            body=data,
            headers={**route.headers, **headers},
            redirect=False,
            assert_same_host=False,
            preload_content=not stream,
            decode_content=True,
            retries=route.adapter.max_retries,
            timeout=_timeout(timeout),
        )
    except MaxRetryError as exc:  # a connection that could not be made (mapped as requests does)
        reason = exc.reason
        if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
            raise UpstreamTimeout(f"Upstream for model {model_name} timed out") from None
        if isinstance(reason, SSLError):
            raise _tls_error(model_name) from None
        raise _connect_error(model_name) from None
    except ReadTimeoutError:
        raise UpstreamTimeout(f"Upstream for model {model_name} timed out") from None
    except SSLError:
        raise _tls_error(model_name) from None
    except (HTTPError, ClosedPoolError, OSError):
        raise _connect_error(model_name) from None
    if raw.get_redirect_location():  # requests follows redirects: let it, for this URL from now on
        raw.drain_conn()
        raw.release_conn()
        session.__dict__["_ai_proxy_routes"][url] = None
        return _send_with_session(session, url, data, headers, timeout, stream, model_name)
    return UpstreamResponse(raw)


def release(response: UpstreamResponse | requests.Response, wait: float = 0.05, most: int = 65536) -> None:
    """A streamed answer has sent its last event: read what is left of its body (normally just the
    chunked-encoding terminator, already on its way) so that urllib3 puts the connection back in the
    pool for the next call. Otherwise closing the response would drop it, and every stream would pay
    for a new TCP (and TLS) handshake. Waits at most `wait` seconds and reads at most `most` bytes;
    when that is not enough the connection is just closed, as before."""
    raw = response.raw
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:  # already back in the pool, or closed
        return
    try:
        sock.settimeout(wait)  # urllib3 sets the timeout again before the connection's next request
        left = most
        while chunk := raw.read1(left):
            left -= len(chunk)
            if left <= 0:
                response.close()
                return
    except Exception:  # whatever went wrong, the connection is not reused
        response.close()


def _send_with_session(
    session: requests.Session,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    timeout: tuple[float, float],
    stream: bool,
    model_name: str,
) -> requests.Response:
    try:
        return session.post(url, data=data, headers=headers, timeout=timeout, stream=stream)
    except requests.Timeout:
        raise UpstreamTimeout(f"Upstream for model {model_name} timed out") from None
    except requests.exceptions.SSLError:
        raise _tls_error(model_name) from None
    except requests.RequestException:
        raise _connect_error(model_name) from None


def _tls_error(model_name: str) -> UpstreamError:
    return UpstreamError(f"TLS error talking to the upstream of model {model_name}")


def _connect_error(model_name: str) -> UpstreamError:
    return UpstreamError(f"Could not connect to the upstream of model {model_name}")
