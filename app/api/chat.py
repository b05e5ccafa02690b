"""POST /v1/chat/completions: parse and validate, call the gateway, render JSON or SSE."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, g, request

from app.api.render import json_response, services
from app.errors import InvalidRequest

bp = Blueprint("chat", __name__)

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def parse_json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    raw = request.get_data(cache=False)
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    return body


def validate_chat(body: dict[str, Any]) -> None:
    """Check what the proxy itself relies on; everything else is the upstream's to judge."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{index}] must be an object", param=f"messages[{index}]")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}, got {role!r}",
                param=f"messages[{index}].role",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(
                f"messages[{index}].content must be a string or a list of parts",
                param=f"messages[{index}].content",
            )
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")


@bp.post("/v1/chat/completions")
@bp.post("/chat/completions")
def chat_completions() -> Response:
    body = parse_json_object()
    validate_chat(body)
    gateway = services().gateway
    if body.get("stream"):
        answer = gateway.chat_stream(body, g.trace)
        headers = {**SSE_HEADERS, **answer.headers, "X-AI-Proxy-Model": answer.model.name}
        return Response(answer.events, mimetype="text/event-stream", headers=headers)
    answer = gateway.chat(body, g.trace)
    return json_response(answer.body, headers={**answer.headers, "X-AI-Proxy-Model": answer.model.name})
