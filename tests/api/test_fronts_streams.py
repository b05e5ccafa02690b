"""The Anthropic and Responses fronts in-process over scripted providers: keep-alives while a model
opens slowly, failures after the start in each API's own words, the upstream closed when the client
leaves, and auth and errors in each API's shape."""

from __future__ import annotations

import threading
from typing import Any

import orjson

from app.errors import UpstreamError
from tests.api.conftest import CLIENT_KEY, Proxy
from tests.gateway.fakes import WORDS, ScriptedProvider, Step, chunk

URL = "http://127.0.0.1:9/v1/chat/completions"  # never called: the providers are scripted


def config(heartbeat: float = 0.02) -> dict[str, Any]:
    model = {"name": "fake/a", "provider": "openai", "url": URL, "token": "sk-up", "model_size": "SMALL"}
    return {"models": [model], "server": {"heartbeat_seconds": heartbeat}, "retry": {"max_attempts": 1}}


def scripted(proxy, *steps: Step) -> tuple[Proxy, ScriptedProvider]:
    app = proxy(config())
    provider = ScriptedProvider(app.services.config.models[0], *steps)
    app.services.providers["fake/a"] = provider
    return app, provider


MESSAGES = {
    "model": "SMALL",
    "max_tokens": 50,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
RESPONSES = {"model": "SMALL", "input": "hi", "stream": True}


def named(piece: bytes) -> tuple[str, Any]:
    """(event name, data) of one SSE block; ("", None) for a comment."""
    if piece.startswith(b":"):
        return "", None
    head, data = piece.strip().split(b"\n", 1)
    return head.removeprefix(b"event: ").decode(), orjson.loads(data.removeprefix(b"data: "))


def test_messages_slow_open_pings_then_answers(proxy):
    gate = threading.Event()
    app, _ = scripted(proxy, Step(gate=gate))
    response = app.post("/v1/messages", MESSAGES, buffered=False)
    assert response.status_code == 200
    body = response.iter_encoded()
    assert [named(next(body))[0] for _ in range(3)] == ["message_start", "ping", "ping"]  # 3rd: a heartbeat
    gate.set()
    rest = [named(piece)[0] for piece in body]
    response.close()
    assert rest[-1] == "message_stop" and "content_block_delta" in rest
    assert set(rest[: rest.index("content_block_start")]) <= {"ping"}


def test_messages_slow_open_failure_is_an_error_event(proxy):
    gate = threading.Event()
    app, _ = scripted(proxy, Step(gate=gate, error=UpstreamError("Upstream for model fake/a answered 500")))
    response = app.post("/v1/messages", MESSAGES, buffered=False)
    body = response.iter_encoded()
    assert named(next(body))[0] == "message_start"
    gate.set()
    events = [named(piece) for piece in body]
    response.close()
    name, data = events[-1]
    assert name == "error" and data["error"]["type"] == "overloaded_error"
    assert "fake/a" in data["error"]["message"]


def test_responses_slow_open_keeps_alive_then_completes(proxy):
    gate = threading.Event()
    app, _ = scripted(proxy, Step(gate=gate))
    response = app.post("/v1/responses", RESPONSES, buffered=False)
    body = response.iter_encoded()
    assert [named(next(body))[0] for _ in range(3)] == ["response.created", "response.in_progress", ""]
    gate.set()
    events = [named(piece) for piece in body if not piece.startswith(b":")]
    response.close()
    assert events[-1][0] == "response.completed"
    assert events[-1][1]["response"]["output_text"] == "Hello"
    numbers = [data["sequence_number"] for _, data in events]
    assert numbers == list(range(2, 2 + len(events)))


def test_client_leaving_closes_the_upstream(proxy):
    silence = threading.Event()
    app, provider = scripted(proxy, Step(chunks=[chunk(role=True), chunk("Hel"), silence, *WORDS[2:]]))
    for path, body in (("/v1/messages", MESSAGES), ("/v1/responses", RESPONSES)):
        provider.closed.clear()
        response = app.post(path, body, buffered=False)
        pieces = response.iter_encoded()
        seen = [named(next(pieces))[0] for _ in range(5)]
        assert "content_block_delta" in seen or "response.output_text.delta" in seen
        response.close()  # the client is gone while the upstream is silent
        assert provider.closed.wait(5), path
    silence.set()


def test_auth_and_errors_in_each_apis_shape(proxy):
    app = proxy(config())
    body = {"model": "SMALL", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    denied = app.client.post("/v1/messages", json=body, headers={"x-api-key": "wrong"})
    assert denied.status_code == 401
    assert denied.json == {
        "type": "error",
        "error": {"type": "authentication_error", "message": denied.json["error"]["message"]},
    }
    assert (
        app.client.post("/v1/chat/completions", json=body, headers={"x-api-key": "wrong"}).json["error"][
            "code"
        ]
        == "invalid_api_key"
    )
    unknown = app.client.post(
        "/v1/messages", json={**body, "model": "nope"}, headers={"x-api-key": CLIENT_KEY}
    )
    assert unknown.status_code == 404 and unknown.json["error"]["type"] == "not_found_error"
    counted = app.client.post("/v1/messages/count_tokens", json=body, headers={"x-api-key": CLIENT_KEY})
    assert counted.status_code == 200 and counted.json["input_tokens"] >= 1
    responses_404 = app.post("/v1/responses", {"model": "nope", "input": "x"})
    assert responses_404.status_code == 404 and responses_404.json["error"]["code"] == "model_not_found"
    assert app.client.get("/").status_code == 200 and app.client.head("/").status_code == 200
