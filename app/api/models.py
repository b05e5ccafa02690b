"""GET /v1/models: every enabled model and every group, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState

from app.config import Config

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
    return Response(current_app.extensions["ai_proxy.models"], mimetype="application/json")
