"""POST /v1/chat/completions: parse and validate, call the gateway, render JSON or SSE."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
from flask import Blueprint, Response, g, request
from werkzeug.exceptions import HTTPException

from app.api.render import error_body, json_response, served_headers, services
from app.api.schema import check_chat
from app.errors import InvalidRequest, RequestTooLarge
from app.events import HEARTBEAT, StreamEvent
from app.gateway import StreamAnswer
from app.sse import DONE, KEEP_ALIVE, encode

bp = Blueprint("chat", __name__)


def read_body() -> bytes:
    """The whole request body, at most `server.max_body_bytes` (a 413 beyond it, chunked bodies
    included); a body the server cannot read (a bad chunk size) is a 400."""
    try:
        raw = request.get_data(cache=False)
        # Werkzeug stops a chunked body at the limit without saying so: one byte more means too large.
        if request.content_length is None:
            limit = request.max_content_length
            if limit is not None and len(raw) >= limit and request.environ["wsgi.input"].read(1):
                raise RequestTooLarge(f"Request body is larger than the limit of {limit} bytes")
    except (HTTPException, RequestTooLarge):
        raise
    except Exception:  # the WSGI server's own parse error (gunicorn: InvalidChunkSize, ...)
        raise InvalidRequest("The request body could not be read (malformed chunked encoding)") from None
    return raw


def parse_json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    raw = read_body()
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    return body


def sse_events(
    events: Iterator[StreamEvent], include_usage: bool, redact: Callable[[str], str]
) -> Iterator[bytes]:
    """The gateway's events as Chat Completions' SSE: a `data:` line per chunk (the usage chunk only
    when the client asked for it), a comment per heartbeat, OpenAI's error event on a failure, and
    `data: [DONE]` at the end either way. Closing this closes the gateway's stream."""
    try:
        for event in events:
            if type(event) is dict:
                if include_usage or event.get("choices") or "usage" not in event:
                    yield encode(event)
            elif event is HEARTBEAT:
                yield KEEP_ALIVE
            else:
                yield encode(error_body(event.error, redact))
        yield DONE
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


@bp.post("/v1/chat/completions")
@bp.post("/chat/completions")
def chat_completions() -> Response:
    body = parse_json_object()
    check_chat(body)
    state = services()
    answer = state.gateway.chat(body, g.trace)
    if isinstance(answer, StreamAnswer):
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        events = sse_events(answer.events, include_usage, state.redactor)
        return Response(events, mimetype="text/event-stream", headers=served_headers(answer, stream=True))
    return json_response(answer.body, headers=served_headers(answer))
