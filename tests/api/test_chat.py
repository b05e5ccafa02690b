"""POST /v1/chat/completions in-process over fake OpenAI upstreams: SSE framing from the gateway's
events, the usage chunk only on request, error events, keep-alives, and headers that name the model
that served after a fallback."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from app.errors import UpstreamError
from tests.api.conftest import Proxy, sse_lines
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import Behavior
from tests.gateway.fakes import WORDS, ScriptedProvider, Step

UPSTREAM_KEY = "sk-fake-upstream-key"


def model(fake: FakeOpenAI, name: str, priority: int = 1, rpm: int = 100) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "openai",
        "url": fake.chat_url,
        "token": UPSTREAM_KEY,
        "priority": priority,
        "requests_per_minute": rpm,
        "model_size": "SMALL",
    }


def config(*models: dict[str, Any], heartbeat: float = 5) -> dict[str, Any]:
    return {
        "models": list(models),
        "server": {"heartbeat_seconds": heartbeat},
        "http": {"connect_timeout": 2, "read_timeout": 10, "stream_idle_timeout": 5},
        "retry": {"max_attempts": 2},
        "routing": {"max_attempts": 3, "cooldown_seconds": 30},
    }


def chat(stream: bool, **extra: Any) -> dict[str, Any]:
    return {"model": "SMALL", "messages": [{"role": "user", "content": "hi"}], "stream": stream, **extra}


def datas(body: bytes) -> list[Any]:
    out = []
    for block in sse_lines(body):
        if block.startswith(b"data: "):
            text = block[6:]
            out.append("[DONE]" if text == b"[DONE]" else json.loads(text))
    return out


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_framing_and_usage_only_on_request(
    proxy, fake_openai: FakeOpenAI, include_usage: bool
) -> None:
    app: Proxy = proxy(config(model(fake_openai, "fake/a")))
    fake_openai.push_chat(content=["One", " two"])
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    response = app.post("/v1/chat/completions", chat(True, **options))
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-AI-Proxy-Model"] == "fake/a"
    events = datas(response.data)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "One two"
    usage = [c for c in chunks if not c["choices"]]
    assert len(usage) == (1 if include_usage else 0)
    if include_usage:
        assert usage[0]["usage"]["total_tokens"] > 0 and chunks[-1] is usage[0]
    assert {c["model"] for c in chunks} == {"fake/a"}


def test_failure_after_content_is_an_error_event_then_done(proxy, fake_openai: FakeOpenAI) -> None:
    app = proxy(config(model(fake_openai, "fake/a")))
    fake_openai.push_chat(content=["One", " two", " three"], error_after=2)
    response = app.post("/v1/chat/completions", chat(True))
    assert response.status_code == 200
    events = datas(response.data)
    assert events[-1] == "[DONE]"
    assert set(events[-2]) == {"error"} and set(events[-2]["error"]) == {"message", "type", "param", "code"}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-2]) == "One two"
    assert len(fake_openai.chat_requests) == 1


def test_fallback_before_content_headers_name_the_server(proxy) -> None:
    with FakeOpenAI() as first, FakeOpenAI() as second:
        app = proxy(config(model(first, "fake/a", 1, rpm=70), model(second, "fake/b", 2, rpm=90)))
        first.push_chat(content=["never"], drop_after=1)  # the role chunk, then the line drops
        response = app.post("/v1/chat/completions", chat(True))
        assert response.status_code == 200
        assert response.headers["X-AI-Proxy-Model"] == "fake/b"
        assert response.headers["x-ratelimit-limit-requests"] == "90"
        chunks = [c for c in datas(response.data) if c != "[DONE]"]
        assert {c["model"] for c in chunks} == {"fake/b"}
        assert len(first.chat_requests) == len(second.chat_requests) == 1


def test_plain_fallback_headers_name_the_server(proxy) -> None:
    with FakeOpenAI() as first, FakeOpenAI() as second:
        app = proxy(config(model(first, "fake/a", 1, rpm=70), model(second, "fake/b", 2, rpm=90)))
        first.push_error("server_error")
        response = app.post("/v1/chat/completions", chat(False))
        assert response.status_code == 200
        assert response.headers["X-AI-Proxy-Model"] == "fake/b" == response.json["model"]
        assert response.headers["x-ratelimit-limit-requests"] == "90"


def test_heartbeat_is_a_keep_alive_comment(proxy, fake_openai: FakeOpenAI) -> None:
    app = proxy(config(model(fake_openai, "fake/a"), heartbeat=0.02))
    gate = threading.Event()
    models = {m.name: m for m in app.services.config.models}
    app.services.providers["fake/a"] = ScriptedProvider(models["fake/a"], Step(gate=gate))
    response = app.post("/v1/chat/completions", chat(True), buffered=False)
    assert response.status_code == 200
    assert response.headers["X-AI-Proxy-Model"] == "fake/a"  # the model being tried when it started
    body = response.iter_encoded()
    assert next(body) == b": keep-alive\n\n"
    gate.set()
    rest = b"".join(body)
    response.close()
    blocks = sse_lines(rest)
    assert blocks[-1] == b"data: [DONE]"
    data = [b for b in blocks if b.startswith(b"data: {")]
    assert len(data) == len(WORDS) - 1  # the usage chunk was not asked for
    assert all(b == b": keep-alive" for b in blocks[: blocks.index(data[0])])


def test_slow_open_failure_is_an_error_event(proxy, fake_openai: FakeOpenAI) -> None:
    app = proxy(config(model(fake_openai, "fake/a"), heartbeat=0.02))
    gate = threading.Event()
    models = {m.name: m for m in app.services.config.models}
    failing = Step(gate=gate, error=UpstreamError("Upstream for model fake/a answered 500"))
    app.services.providers["fake/a"] = ScriptedProvider(models["fake/a"], failing)
    response = app.post("/v1/chat/completions", chat(True), buffered=False)
    body = response.iter_encoded()
    assert next(body) == b": keep-alive\n\n"
    gate.set()
    events = datas(b"".join(body))
    response.close()
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]  # the group had no other member: nothing could serve
    assert error["code"] == "service_unavailable" and "fake/a: Upstream for model fake/a" in error["message"]


def test_unreadable_upstream_is_a_502_in_openai_shape(proxy, fake_openai: FakeOpenAI) -> None:
    app = proxy(config(model(fake_openai, "fake/a")))
    fake_openai.push("chat", Behavior(body=b"<html>oops</html>"), Behavior(body=b"<html>oops</html>"))
    response = app.post("/v1/chat/completions", {**chat(False), "model": "fake/a"})
    assert response.status_code == 502
    assert set(response.json["error"]) == {"message", "type", "param", "code"}
    assert app.sleeps == [0.25]  # one retry after the default base delay (jitter 1.0)
