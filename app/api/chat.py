"""POST /v1/chat/completions: parse and validate, call the gateway, render JSON or SSE."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, g, request

from app.api.render import json_response, services
from app.api.schema import check_chat
from app.errors import InvalidRequest

bp = Blueprint("chat", __name__)

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


@bp.post("/v1/chat/completions")
@bp.post("/chat/completions")
def chat_completions() -> Response:
    body = parse_json_object()
    check_chat(body)
    gateway = services().gateway
    if body.get("stream"):
        answer = gateway.chat_stream(body, g.trace)
        headers = {**SSE_HEADERS, **answer.headers, "X-AI-Proxy-Model": answer.model.name}
        return Response(answer.events, mimetype="text/event-stream", headers=headers)
    answer = gateway.chat(body, g.trace)
    return json_response(answer.body, headers={**answer.headers, "X-AI-Proxy-Model": answer.model.name})
