"""The app in-process: `create_app(config)` and Flask's test client, with an injected sleep."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.config import parse_config
from app.gateway import Gateway

CLIENT_KEY = "api-client-key-5c0ffee5"


@dataclass
class Proxy:
    app: Flask
    client: FlaskClient
    services: Any
    sleeps: list[float] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {CLIENT_KEY}"}

    def post(self, path: str, body: Any, **kwargs: Any):
        return self.client.post(path, json=body, headers=self.auth, **kwargs)

    def get(self, path: str):
        return self.client.get(path, headers=self.auth)


@contextlib.contextmanager
def openai_sdk(proxy: Proxy) -> Iterator[openai.OpenAI]:
    """The official `openai` SDK bound to the proxy's app over httpx's WSGI transport, no retries."""
    http = httpx.Client(transport=httpx.WSGITransport(app=proxy.app))
    with openai.OpenAI(
        base_url="http://proxy.test/v1", api_key=CLIENT_KEY, http_client=http, max_retries=0
    ) as sdk:
        yield sdk


def flush_logs() -> None:
    for handler in logging.getLogger("ai_proxy").handlers:
        handler.flush()


class LogCapture:
    """What the proxy's own log handler writes (call after the app is built: it owns the handler)."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        for handler in logging.getLogger("ai_proxy").handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(self.buffer)

    def text(self) -> str:
        flush_logs()
        return self.buffer.getvalue()


@pytest.fixture
def proxy() -> Iterator[Callable[..., Proxy]]:
    """Factory: `proxy(raw_config, **environ)` builds the app from a config mapping (client key
    CLIENT_KEY unless AI_PROXY_API_KEYS is given); retries sleep into `Proxy.sleeps`."""
    built: list[Proxy] = []

    def build(raw: dict[str, Any], **environ: str) -> Proxy:
        environ.setdefault("AI_PROXY_API_KEYS", CLIENT_KEY)
        config = parse_config(raw, environ)
        app = create_app(config)
        services = app.extensions["ai_proxy"]
        proxy = Proxy(app, app.test_client(), services)
        services.gateway = Gateway(
            config,
            services.router,
            services.providers,
            redactor=services.redactor,
            sleep=proxy.sleeps.append,
            jitter=lambda: 1.0,
        )
        built.append(proxy)
        return proxy

    yield build
    for proxy in built:
        proxy.services.close()


def sse_lines(data: bytes) -> list[bytes]:
    """The SSE blocks of a body, without their blank-line terminators."""
    return [block for block in data.split(b"\n\n") if block]
