"""The web layer: one blueprint per area; no business logic lives here."""

from __future__ import annotations

from flask import Flask

from app.api import (
    anthropic,
    audio,
    chat,
    embeddings,
    health,
    hooks,
    images,
    metrics,
    models,
    openapi,
    quota,
    responses,
    status,
    usage,
)


def register(app: Flask) -> None:
    hooks.install(app)
    for module in (
        health,
        chat,
        anthropic,
        responses,
        models,
        images,
        embeddings,
        audio,
        quota,
        metrics,
        status,
        openapi,
        usage,
    ):
        app.register_blueprint(module.bp)
