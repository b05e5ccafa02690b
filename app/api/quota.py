"""GET /v1/quota: per model, used and left per window, cooldown and breaker state."""

from __future__ import annotations

from flask import Blueprint, Response

from app.api.render import json_response, services

bp = Blueprint("quota", __name__)


@bp.get("/v1/quota")
@bp.get("/quota")
def quota() -> Response:
    return json_response({"object": "list", "data": services().router.snapshot()})
