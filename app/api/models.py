"""GET /v1/models: every enabled model, group and alias, in OpenAI's list shape; GET /v1/models/{id}."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g
from flask.blueprints import BlueprintSetupState

from app.api.render import json_response, services
from app.clients import Client
from app.config import Config, alias_target
from app.errors import ModelNotFound, ProxyError
from app.routing import Router

bp = Blueprint("models", __name__)


def model_list(config: Config, created: int) -> dict[str, Any]:
    """Aliases are listed when they lead to an enabled model or group (else a request would 404)."""
    data = [_entry(m.name, created, m.provider) for m in config.enabled_models]
    groups = sorted({m.group for m in config.enabled_models if m.group})
    data += [_entry(g, created) for g in groups]
    data += [_entry(a, created) for a, target in config.aliases if _serves(config, target)]
    return {"object": "list", "data": data}


def _serves(config: Config, name: str | None) -> bool:
    """Does `name` (a model or group) have an enabled model?"""
    return name is not None and any(m.name == name or m.group == name.upper() for m in config.enabled_models)


def _entry(model_id: str, created: int, owner: str = "ai-proxy") -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


def model_entry(config: Config, model_id: str, created: int) -> dict[str, Any]:
    """One model, group, or name an alias covers (as asked), like an entry of the list; else a 404."""
    for m in config.enabled_models:
        if m.name == model_id:
            return _entry(m.name, created, m.provider)
    groups = {m.group for m in config.enabled_models if m.group}
    if model_id.upper() in groups or _serves(config, alias_target(config.aliases, model_id)):
        return _entry(model_id, created)
    raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")


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
    kinds = enabled_kinds(state.config)
    listing["data"] = [e for e in listing["data"] if _may_use(client, state.router, kinds, e["id"])]
    return Response(orjson.dumps(listing), mimetype="application/json")


def enabled_kinds(config: Config) -> list[str]:
    return sorted({m.kind for m in config.enabled_models})


def _may_use(client: Client, router: Router, kinds: list[str], name: str) -> bool:
    """Would a request for `name` pass the client's allow-list (whatever kind of model it is)?"""
    for kind in kinds:
        try:
            client.allowed(name, router.resolve(name, kind))
        except ProxyError:
            continue
        return True
    return False


@bp.get("/v1/models/<path:model_id>")
@bp.get("/models/<path:model_id>")
def get_model(model_id: str) -> Response:
    state = services()
    client = g.trace.client
    if client is not None and client.patterns:
        kinds = enabled_kinds(state.config)
        if not _may_use(client, state.router, kinds, model_id):
            raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
    return json_response(model_entry(state.config, model_id, int(state.started_at)))
