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
    redact = state.redactor
    for entry in data:  # stored redacted; redacted again for errors another process or version stored
        last_error = entry.get("last_error")
        if last_error and isinstance(last_error.get("message"), str):
            last_error["message"] = redact(last_error["message"])
        if isinstance(entry.get("cooldown_reason"), str):
            entry["cooldown_reason"] = redact(entry["cooldown_reason"])
        for key in entry.get("keys") or ():  # a key's rest reason comes from the adapter, free text
            cooldown = key.get("cooldown")
            if cooldown and isinstance(cooldown.get("reason"), str):
                cooldown["reason"] = redact(cooldown["reason"])
    return json_response({"object": "list", "data": data})
