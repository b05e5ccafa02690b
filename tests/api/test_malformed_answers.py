"""A malformed OpenAI-compatible 200 (issue 10, item 7) through the whole app: a typed error in OpenAI's
shape that never quotes the body, and a fallback to the group's next model, plain and streamed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.test_chat import chat, config, datas, model
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import Behavior

CANARY = "CANARY-body-9d1e"
MALFORMED = {"choices": [{"message": CANARY}]}


def malformed(stream: bool) -> Behavior:
    if stream:
        return Behavior(events=[b"data: " + json.dumps(MALFORMED).encode() + b"\n\n", b"data: [DONE]\n\n"])
    return Behavior(json=MALFORMED)


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_answer_is_a_502_without_the_body(
    proxy: Any, fake_openai: FakeOpenAI, stream: bool
) -> None:
    raw = config(model(fake_openai, "first/m"))
    raw["retry"] = {"max_attempts": 1}
    app = proxy(raw)
    fake_openai.push("chat", malformed(stream))
    response = app.post("/v1/chat/completions", chat(stream))
    assert CANARY not in response.get_data(as_text=True)
    assert len(fake_openai.chat_requests) == 1
    # the gateway's summary for a group with nothing left to try is a 503 naming each failure
    assert response.status_code in (502, 503)
    error = response.get_json()["error"]
    assert error["type"] in ("upstream_error", "server_error")
    assert "Upstream for model first/m sent a malformed" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_answer_falls_back_to_the_next_model(proxy: Any, stream: bool) -> None:
    with FakeOpenAI() as first, FakeOpenAI() as second:
        app = proxy(config(model(first, "first/m", priority=1), model(second, "second/m", priority=2)))
        first.push("chat", *[malformed(stream)] * 3)
        response = app.post("/v1/chat/completions", chat(stream))
        assert response.status_code == 200
        assert response.headers["X-AI-Proxy-Model"] == "second/m"
        assert first.chat_requests and second.chat_requests
        if stream:
            events = datas(response.get_data())
            assert events[-1] == "[DONE]" and all("error" not in e for e in events[:-1])
        else:
            assert response.get_json()["choices"][0]["message"]["role"] == "assistant"
