"""The gunicorn worker: gunicorn's gthread worker whose own error answers are JSON in OpenAI's shape.

gunicorn answers a request it cannot parse or that breaks one of its limits (request line, header
count or size, a bad chunk) itself, before the app sees it, with a small HTML page, and has no
setting for that page. `handle_error` is the worker's hook for those answers: this subclass writes
the same statuses with an OpenAI error body (that never echoes the request) and leaves every other
error, the app's included, to gunicorn. `gunicorn.conf.py` names it as `worker_class`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from gunicorn import util
from gunicorn.http import errors
from gunicorn.workers.gthread import ThreadWorker as GthreadWorker

from app.errors import InvalidRequest

# gunicorn's own client errors, with the status gunicorn gives each (gunicorn.workers.base).
CLIENT_ERRORS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int, str, str], ...] = (
    (errors.LimitRequestLine, 414, "URI Too Long", "The request line is too long"),
    (
        errors.LimitRequestHeaders,
        431,
        "Request Header Fields Too Large",
        "The request has too many headers or a header that is too large",
    ),
    (errors.ExpectationFailed, 417, "Expectation Failed", "The Expect header cannot be met"),
    (errors.UnsupportedTransferCoding, 501, "Not Implemented", "The transfer coding is not supported"),
    (errors.ForbiddenProxyRequest, 403, "Forbidden", "Request forbidden"),
    (
        (
            errors.InvalidRequestLine,
            errors.InvalidRequestMethod,
            errors.InvalidHTTPVersion,
            errors.InvalidHeader,
            errors.InvalidHeaderName,
            errors.ObsoleteFolding,
            errors.InvalidProxyLine,
            errors.InvalidSchemeHeaders,
            errors.InvalidH2CPreface,
            errors.InvalidChunkSize,
            errors.ChunkMissingTerminator,
            errors.InvalidChunkExtension,
        ),
        400,
        "Bad Request",
        "The request is not valid HTTP",
    ),
)
# The app's own bad header is the app's fault (gunicorn answers 500): not a client error.
APP_ERRORS = (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName)


def error_answer(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP answer carrying an OpenAI error body; the connection closes after it."""
    body = orjson.dumps(
        InvalidRequest(message, status=status, code=reason.lower().replace(" ", "_")).to_dict()
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class ThreadWorker(GthreadWorker):
    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if not isinstance(exc, APP_ERRORS):
            for kinds, status, reason, message in CLIENT_ERRORS:
                if isinstance(exc, kinds):
                    self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
                    with contextlib.suppress(Exception):
                        util.write_nonblock(client, error_answer(status, reason, message))
                    return
        super().handle_error(req, client, addr, exc)
