"""Request hooks for every blueprint: request id, client auth, error rendering, the access log."""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app.api.render import error_response, services
from app.clients import Client, Clients
from app.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
    ProxyError,
    RequestTooLarge,
)
from app.gateway import Trace
from app.metrics import Metrics

log = logging.getLogger("ai_proxy.access")
errors_log = logging.getLogger("ai_proxy.errors")

PUBLIC_ENDPOINTS = frozenset(
    {"health.health", "health.ping", "health.root", "static", "status.status_page", "openapi.openapi_json"}
)
# Admin keys only (metrics: unless server.metrics_public).
ADMIN_ENDPOINTS = frozenset({"quota.quota", "metrics.metrics", "status.disabled_models"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_SLASHES = re.compile(r"/{2,}")


class RequestIds:
    """Unique request ids, 32 hex digits: a random prefix per process and a counter. uuid4() would
    read the kernel's random source for every request, a syscall that also hands the GIL over to
    another of the worker's threads under load."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._next = itertools.count(1).__next__  # one C call: atomic under the GIL

    def __call__(self) -> str:
        return f"{self._prefix}{self._next():016x}"


new_request_id = RequestIds()
os.register_at_fork(after_in_child=new_request_id.reset)  # gunicorn workers are forked


class MergeSlashes:
    """WSGI middleware: `/v1//chat/completions` is served as `/v1/chat/completions`. (Werkzeug's own
    merge_slashes answers a redirect instead, which Flask renders as HTML and clients don't follow
    for a POST.)"""

    def __init__(self, wsgi_app: Callable[..., Any]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = _SLASHES.sub("/", path)
        return self.wsgi_app(environ, start_response)


def install(app: Flask) -> None:
    app.wsgi_app = MergeSlashes(app.wsgi_app)  # type: ignore[method-assign]
    state = app.extensions["ai_proxy"]
    clients = state.clients
    metrics = app.extensions["ai_proxy.metrics"] = Metrics(
        state.config, state.router.snapshot, lambda: state.router.settle_failures
    )
    public = set(PUBLIC_ENDPOINTS)
    admin_only = set(ADMIN_ENDPOINTS)
    if app.extensions["ai_proxy"].config.server.metrics_public:
        public.add("metrics.metrics")
        admin_only.discard("metrics.metrics")

    @app.before_request
    def start() -> Response | None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else new_request_id()
        g.trace = Trace()
        sock = request.environ.get("gunicorn.socket")
        if sock is not None:
            g.trace.client_gone = partial(client_gone, sock)
        if request.endpoint in public:
            return None
        client = clients.anonymous if clients.open else _identify(clients)
        if client is None:
            return error_response(
                AuthenticationFailed(
                    "Invalid or missing API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key'."
                )
            )
        g.trace.client = client
        if request.endpoint in admin_only and not client.admin:
            return error_response(PermissionDenied("This endpoint needs an admin key"))
        return None

    @app.after_request
    def finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        trace = g.get("trace")
        if trace is not None and trace.served and request.endpoint not in public:
            response.headers.setdefault("X-AI-Proxy-Model", trace.served)
        response.call_on_close(_on_close(metrics, request.endpoint, response.status_code))
        return response

    @app.errorhandler(ProxyError)
    def proxy_error(error: ProxyError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return error_response(_from_http(error))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        errors_log.error(
            "unhandled %s on %s %s (request %s)",
            type(error).__name__,
            request.method,
            request.path,
            g.get("request_id"),
            exc_info=error,
        )
        return error_response(ProxyError("The proxy hit an internal error; it has been logged."))


def client_gone(sock: socket.socket) -> bool:
    """Whether the client has closed its connection, e.g. while its request waited for a thread: with
    the request read, a read that does not wait finds the end of the stream. The gateway asks once,
    before routing (Trace.client_gone). As for nginx (499), a client that half-closes after sending
    counts as gone; a TLS socket is not checked."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:  # nothing to read: still there
        return False
    except ConnectionError:
        return True
    except (OSError, ValueError):  # ValueError: a TLS socket takes no flags
        return False


def _identify(clients: Clients) -> Client | None:
    """The client whose key came as `Authorization: Bearer` or `x-api-key` (compared in constant
    time by Clients.identify); None for a missing or unknown key."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else ""
    key = key or request.headers.get("x-api-key", "").strip()
    return clients.identify(key) if key else None


def _from_http(error: HTTPException) -> ProxyError:
    if isinstance(error, RequestEntityTooLarge):
        limit = services().config.server.max_body_bytes
        return RequestTooLarge(f"Request body is larger than the limit of {limit} bytes")
    if error.code == 404:
        return NotFound(f"No such endpoint: {request.method} {request.path}")
    if error.code == 405:
        return MethodNotAllowed(f"Method {request.method} is not allowed on {request.path}")
    return InvalidRequest(error.description or "Bad request", status=error.code or 400)


def _on_close(metrics: Metrics, endpoint: str | None, status: int):
    """When the response is closed (a stream: after its last byte, or the client left): count it in
    the metrics and write the access line, both from the request's finished Trace."""
    trace: Trace = g.trace
    request_id = g.request_id
    started = g.started
    method, path = request.method, request.path

    def closed() -> None:
        metrics.observe(endpoint, status, trace)
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "request_id": request_id,
                "status": status,
                "method": method,
                "path": path,
                "client": trace.client.name if trace.client is not None else None,
                "model": trace.asked or None,
                "served": trace.served or None,
                "key": trace.key or None,
                "attempts": trace.attempts,
                "fallbacks": trace.fallbacks,
                "upstream_ms": round(trace.upstream_ms, 2),
                "first_token_ms": None if trace.first_token_ms is None else round(trace.first_token_ms, 2),
                "total_ms": round((time.perf_counter() - started) * 1000.0, 2),
                "stream_error": trace.stream_error,
            },
        )

    return closed
