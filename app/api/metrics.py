"""GET /metrics: Prometheus text format (client keys unless `server.metrics_public: true`)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from app.metrics import CONTENT_TYPE

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    body = current_app.extensions["ai_proxy.metrics"].render()
    return Response(body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
