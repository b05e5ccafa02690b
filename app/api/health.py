"""Liveness: GET /health and GET /ping, no auth."""

from __future__ import annotations

from flask import Blueprint, Response

from app import __version__
from app.api.render import json_response

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    return json_response({"status": "ok", "version": __version__})


@bp.get("/ping")
def ping() -> Response:
    return Response("OK", mimetype="text/plain")
