"""GET /status (public): a self-contained HTML page that shows /v1/quota as bars and refreshes itself,
and GET /status/disabled (with the client key, like /v1/quota): the disabled models, shown greyed out.

The page holds no data: it asks for the client key (kept in sessionStorage) when /v1/quota wants one.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState

from app.api.render import json_response, services

PAGE = Path(__file__).resolve().parent.parent / "static" / "status.html"
HEADERS = {
    "Cache-Control": "no-cache",
    # Inline style and script only; fetches go to this origin alone.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

bp = Blueprint("status", __name__)


@bp.record_once
def _read_once(setup: BlueprintSetupState) -> None:
    setup.app.extensions["ai_proxy.status_page"] = PAGE.read_bytes()


@bp.get("/status")
def status_page() -> Response:
    return Response(current_app.extensions["ai_proxy.status_page"], mimetype="text/html", headers=HEADERS)


@bp.get("/status/disabled")
def disabled_models() -> Response:
    """Every configured model that is disabled, with what would enable it (variable names, never values)."""
    data = [
        {
            "name": m.name,
            "provider": m.provider,
            "group": m.group,
            "kind": m.kind,
            "priority": m.priority,
            "reason": m.enable_hint,
        }
        for m in services().config.models
        if not m.enabled
    ]
    return json_response({"object": "list", "data": data})
