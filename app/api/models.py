"""GET /v1/models: every enabled model and every group, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g
from flask.blueprints import BlueprintSetupState

from app.api.render import services
from app.clients import Client
from app.config import Config
from app.errors import ProxyError
from app.routing import Router

bp = Blueprint("models", __name__)


def model_list(config: Config, created: int) -> dict[str, Any]:
    data: list[dict[str, Any]] = [
        {"id": m.name, "object": "model", "created": created, "owned_by": m.provider}
        for m in config.enabled_models
    ]
    groups = sorted({m.group for m in config.enabled_models if m.group})
    data += [{"id": g, "object": "model", "created": created, "owned_by": "ai-proxy"} for g in groups]
    return {"object": "list", "data": data}


@bp.record_once
def _render_once(setup: BlueprintSetupState) -> None:
    """The list never changes while the process runs: serialise it once."""
    state = setup.app.extensions["ai_proxy"]
    setup.app.extensions["ai_proxy.models"] = orjson.dumps(model_list(state.config, int(state.started_at)))


@bp.get("/v1/models")
@bp.get("/models")
def list_models() -> Response:
    client = g.trace.client
    if client is None or not client.patterns:
        return Response(current_app.extensions["ai_proxy.models"], mimetype="application/json")
    listing = orjson.loads(current_app.extensions["ai_proxy.models"])
    state = services()
    kinds = sorted({m.kind for m in state.config.enabled_models})
    listing["data"] = [e for e in listing["data"] if _may_use(client, state.router, kinds, e["id"])]
    return Response(orjson.dumps(listing), mimetype="application/json")


def _may_use(client: Client, router: Router, kinds: list[str], name: str) -> bool:
    """Would a request for `name` pass the client's allow-list (whatever kind of model it is)?"""
    for kind in kinds:
        try:
            client.allowed(name, router.resolve(name, kind))
        except ProxyError:
            continue
        return True
    return False
