"""GET /v1/quota: per model, used and left per window, cooldown and breaker state."""

from __future__ import annotations

from flask import Blueprint, Response

from app.api.render import json_response, services

bp = Blueprint("quota", __name__)


@bp.get("/v1/quota")
@bp.get("/quota")
def quota() -> Response:
    state = services()
    data = state.router.snapshot()
    for entry in data:  # stored redacted; redacted again for errors another process or version stored
        last_error = entry.get("last_error")
        if last_error and isinstance(last_error.get("message"), str):
            last_error["message"] = state.redactor(last_error["message"])
    return json_response({"object": "list", "data": data})
