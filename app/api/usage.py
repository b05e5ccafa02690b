"""GET /v1/usage?days=N[&client=NAME]: per client, per UTC day, per model: requests, prompt and
completion tokens. A client sees its own; an admin everyone's (or one client's)."""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from app.api.render import json_response, services
from app.errors import InvalidRequest, PermissionDenied

bp = Blueprint("usage", __name__)

DEFAULT_DAYS = 7


@bp.get("/v1/usage")
@bp.get("/usage")
def usage() -> Response:
    state = services()
    keep = state.config.server.usage_days
    raw = request.args.get("days", str(DEFAULT_DAYS))
    if not raw.isdigit() or not 1 <= int(raw) <= keep:
        raise InvalidRequest(f"'days' must be an integer from 1 to {keep}", param="days")
    days = int(raw)
    client = g.trace.client
    wanted = request.args.get("client") or None
    if not client.admin:
        if wanted not in (None, client.name):
            raise PermissionDenied("Only an admin key may see another client's usage")
        wanted = client.name
    rows = [r for r in state.router.usage(days) if wanted is None or r.client == wanted]
    data = [
        {
            "date": r.day,
            "client": r.client,
            "model": r.model,
            "requests": r.requests,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens,
        }
        for r in rows
    ]
    return json_response({"object": "list", "days": days, "data": data})
