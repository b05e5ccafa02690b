"""Rendering helpers shared by the blueprints: JSON bytes via orjson, OpenAI-shaped errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
from flask import Response, current_app

from app.errors import ProxyError


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, headers=headers, mimetype="application/json")


def error_body(error: ProxyError, redact: Callable[[str], str]) -> dict[str, Any]:
    """OpenAI's error object, its message redacted (a last guard: the gateway redacts upstream errors)."""
    body = error.to_dict()
    body["error"]["message"] = redact(error.message)
    return body


def error_response(error: ProxyError) -> Response:
    headers: dict[str, str] = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if error.retry_after is not None and error.status in (429, 503):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return json_response(error_body(error, services().redactor), error.status, headers)


def services():  # -> app.services.Services (untyped to keep Flask's import graph light)
    return current_app.extensions["ai_proxy"]
