"""Liveness: GET /health, GET /ping and GET or HEAD / (clients probe it before their first call), no auth."""

from __future__ import annotations

from flask import Blueprint, Response

from app import __version__
from app.api.render import json_response

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    return json_response({"status": "ok", "version": __version__})


@bp.get("/")  # Flask answers HEAD for every GET route
def root() -> Response:
    return json_response({"status": "ok", "service": "ai-proxy", "version": __version__})


@bp.get("/ping")
def ping() -> Response:
    return Response("OK", mimetype="text/plain")
