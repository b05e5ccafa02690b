"""GET /openapi.json (public): the OpenAPI 3 description of the API, from app/openapi.yaml."""

from __future__ import annotations

from pathlib import Path

import orjson
import yaml
from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState

from app import __version__

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"

bp = Blueprint("openapi", __name__)


def load_spec() -> dict:
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    spec["info"]["version"] = __version__
    return spec


@bp.record_once
def _render_once(setup: BlueprintSetupState) -> None:
    setup.app.extensions["ai_proxy.openapi"] = orjson.dumps(load_spec())


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(current_app.extensions["ai_proxy.openapi"], mimetype="application/json")
