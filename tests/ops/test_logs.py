"""Structured logs (AI_PROXY_LOG_FORMAT=json): one JSON object per line with the request's story,
and never a key or a message body in the log at INFO."""

from __future__ import annotations

import json

import pytest

from tests.ops.conftest import (
    CLIENT_KEY,
    FAST_ENV,
    UPSTREAM_KEY,
    chat_body,
    config,
    get,
    model,
    stream,
    wait_until,
)

pytestmark = pytest.mark.e2e

SECRET_TEXT = "the launch code is PURPLE-ELEPHANT-4711"
WRONG_KEY = "wrong-client-key-5e1d0c"


def test_json_logs_tell_the_story_and_keep_secrets(gunicorn_server, fake_openai):
    cfg = config(
        model(fake_openai.chat_url, "fake/a", priority=1),
        model(fake_openai.chat_url, "fake/b", priority=2),
        model(fake_openai.chat_url, "fake/c", group="BIG"),
        retry={"max_attempts": 1},
    )
    server = gunicorn_server(cfg, env={**FAST_ENV, "AI_PROXY_LOG_FORMAT": "json"})

    ok = stream(server.port, chat_body("fake/a", SECRET_TEXT))
    assert ok.status == 200
    plain = stream(server.port, {**chat_body("SMALL", SECRET_TEXT), "stream": False})
    assert plain.status == 200
    fake_openai.push_error("server_error")  # fake/a fails, fake/b serves
    fallback = stream(server.port, chat_body("SMALL", SECRET_TEXT))
    assert fallback.status == 200 and fallback.errors == []
    fake_openai.push_chat(content=["One", " two", " three"], drop_after=2)  # broken mid-stream
    broken = stream(server.port, chat_body("fake/c", SECRET_TEXT))
    assert broken.status == 200 and broken.content == "One" and broken.errors
    # Last: a rejected key rests every model that uses it (cooldown class `auth`).
    fake_openai.push_error("invalid_api_key", api_key=UPSTREAM_KEY)  # upstream rejects our key
    assert stream(server.port, chat_body("fake/b", SECRET_TEXT)).status == 502
    assert stream(server.port, chat_body("fake/a", SECRET_TEXT), key=WRONG_KEY).status == 401
    bad = {"model": "fake/a", "messages": [{"role": SECRET_TEXT, "content": SECRET_TEXT}]}
    assert stream(server.port, bad).status == 400
    assert get(server.port, "/v1/quota")[0] == 200

    def access_lines():
        return [e for e in entries(server.log_text()) if e["logger"] == "ai_proxy.access"]

    assert wait_until(lambda: len(access_lines()) >= 9, 15)
    log = server.log_text()
    for secret in (CLIENT_KEY, WRONG_KEY, UPSTREAM_KEY, UPSTREAM_KEY[-8:], "PURPLE-ELEPHANT"):
        assert secret not in log, f"{secret!r} leaked into the log"

    lines = entries(log)  # every line is one JSON object
    access = {e["request_id"]: e for e in lines if e["logger"] == "ai_proxy.access"}
    first = access[ok.headers["X-Request-ID"]]
    assert first["status"] == 200 and first["model"] == "fake/a" and first["served"] == "fake/a"
    assert first["attempts"] == 1 and first["upstream_ms"] > 0 and first["total_ms"] >= first["upstream_ms"]
    assert first["first_token_ms"] > 0
    moved = access[fallback.headers["X-Request-ID"]]
    assert moved["model"] == "SMALL" and moved["served"] == "fake/b"
    assert moved["attempts"] == 2 and moved["fallbacks"] == 1
    cut = access[broken.headers["X-Request-ID"]]
    assert cut["stream_error"] and cut["status"] == 200
    assert access[plain.headers["X-Request-ID"]]["served"] == "fake/a"
    assert {e["level"] for e in lines} <= {"debug", "info", "warning", "error", "critical"}


def entries(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)  # raises on a line that is not JSON
        assert isinstance(entry, dict) and {"ts", "level", "logger", "msg"} <= entry.keys(), line
        out.append(entry)
    return out
