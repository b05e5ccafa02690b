"""Rendering helpers shared by the blueprints: JSON bytes via orjson, errors in each API's shape."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from app.errors import ProxyError


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, headers=headers, mimetype="application/json")


def error_body(error: ProxyError, redact: Callable[[str], str]) -> dict[str, Any]:
    """OpenAI's error object, its message redacted (a last guard: the gateway redacts upstream errors)."""
    body = error.to_dict()
    body["error"]["message"] = redact(error.message)
    return body


ErrorRenderer = Callable[[ProxyError], Response]
ERROR_SHAPES = "ai_proxy.error_shapes"  # app.extensions key: blueprint name -> its ErrorRenderer


def error_shape(bp: Blueprint, render: ErrorRenderer) -> None:
    """Errors on `bp`'s routes (auth, validation, routing, 404/405) are rendered by `render`."""
    bp.record_once(lambda setup: setup.app.extensions.setdefault(ERROR_SHAPES, {}).update({bp.name: render}))


def error_response(error: ProxyError) -> Response:
    """The error in the shape of the API the request was for (OpenAI's unless a blueprint says)."""
    render = current_app.extensions.get(ERROR_SHAPES, {}).get(request.blueprint)
    return render(error) if render is not None else openai_error_response(error)


def openai_error_response(error: ProxyError) -> Response:
    headers: dict[str, str] = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    headers.update(retry_after_header(error))
    return json_response(error_body(error, services().redactor), error.status, headers)


def retry_after_header(error: ProxyError) -> dict[str, str]:
    if error.retry_after is not None and error.status in (429, 503):
        return {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
    return {}


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


WARNING_HEADER = "X-AI-Proxy-Warning"


def served_headers(answer: Any, stream: bool = False, ignored_tools: Sequence[str] = ()) -> dict[str, str]:
    """Headers of a gateway answer (ChatAnswer or StreamAnswer): rate limits, the model that served,
    and a warning naming the built-in tools a front API dropped (no free upstream runs them)."""
    headers = {**answer.headers, "X-AI-Proxy-Model": answer.model.name}
    if ignored_tools:
        ignored = ", ".join(ignored_tools)
        headers[WARNING_HEADER] = f"built-in tools are not run by this gateway and were ignored: {ignored}"
    return {**SSE_HEADERS, **headers} if stream else headers


def services():  # -> app.services.Services (untyped to keep Flask's import graph light)
    return current_app.extensions["ai_proxy"]
