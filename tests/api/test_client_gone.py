"""A request whose client hung up while it waited for a thread is refused before routing, in the one
place every front API passes (the gateway asks `Trace.client_gone`, which the request hooks set from
gunicorn's public `gunicorn.socket` environ key): answered 499 for the access log and metrics, nothing
sent upstream, no quota spent. Through a real gunicorn worker: tests/ops/test_capacity.py."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.api.hooks import client_gone
from tests.api.conftest import Proxy
from tests.fakes.transcription import FakeOpenAITranscription


def connected() -> tuple[socket.socket, socket.socket]:
    """(server side, client side) of a TCP connection on loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = connected()
    yield server, client
    server.close()
    client.close()


def test_client_gone_reads_the_socket_without_taking_anything(connection) -> None:
    server, client = connection
    assert client_gone(server) is False  # nothing sent, still there
    client.sendall(b"x")  # a pipelined byte stays for the next request
    assert client_gone(server) is False
    assert server.recv(1) == b"x"
    client.close()
    assert client_gone(server) is True


def test_client_gone_after_a_reset(connection) -> None:
    server, client = connection
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # RST instead of FIN
    assert client_gone(server) is True


FRONTS: list[tuple[str, str, dict[str, Any]]] = [
    ("chat", "/v1/chat/completions", {"model": "fake/chat", "messages": [{"role": "user", "content": "hi"}]}),
    (
        "chat stream",
        "/v1/chat/completions",
        {"model": "fake/chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "anthropic",
        "/v1/messages",
        {"model": "fake/chat", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
    ),
    ("responses", "/v1/responses", {"model": "fake/chat", "input": "hi"}),
    ("embeddings", "/v1/embeddings", {"model": "fake/embed", "input": "hi"}),
    ("images", "/v1/images/generations", {"model": "fake/image", "prompt": "a red square"}),
    ("audio", "/v1/audio/transcriptions", {"model": "fake/whisper"}),
]


@pytest.fixture
def app(proxy: Callable[..., Proxy]) -> Iterator[tuple[Proxy, FakeOpenAITranscription]]:
    with FakeOpenAITranscription() as fake:
        urls = {
            "fake/chat": ("chat", fake.chat_url),
            "fake/embed": ("embedding", f"{fake.base_url}/embeddings"),
            "fake/image": ("image", fake.images_url),
            "fake/whisper": ("transcription", fake.transcriptions_url),
        }
        models = [
            {"name": name, "kind": kind, "provider": "openai", "url": url, "token": "sk-fake-upstream-key",
             "requests_per_minute": 100}
            for name, (kind, url) in urls.items()
        ]  # fmt: skip
        yield proxy({"models": models}), fake


def post(app: Proxy, path: str, body: dict[str, Any], sock: socket.socket) -> Any:
    environ = {"gunicorn.socket": sock}
    if path.endswith("/transcriptions"):
        data = {**body, "file": (io.BytesIO(b"RIFF fake audio"), "a.wav")}
        return app.client.post(
            path, data=data, headers=app.auth, content_type="multipart/form-data", environ_base=environ
        )
    return app.post(path, body, environ_base=environ)


def used(app: Proxy) -> dict[str, int]:
    return {m["name"]: m["windows"][0]["used"] for m in app.services.router.snapshot()}


@pytest.mark.parametrize(("front", "path", "body"), FRONTS, ids=[f[0] for f in FRONTS])
def test_every_front_refuses_a_request_whose_client_left(app, connection, front, path, body) -> None:
    proxy, fake = app
    server, client = connection
    client.close()
    answer = post(proxy, path, body, server)
    assert answer.status_code == 499, answer.get_data()
    assert fake.requests == []
    assert set(used(proxy).values()) == {0}


def test_a_client_still_there_is_served(app, connection) -> None:
    proxy, fake = app
    server, _ = connection
    path, body = FRONTS[0][1:]
    answer = post(proxy, path, body, server)
    assert answer.status_code == 200, answer.get_data()
    assert len(fake.chat_requests) == 1
    assert used(proxy)["fake/chat"] == 1
