"""End to end: the official `openai` SDK -> the proxy under gunicorn (its GigaChat adapter with the
OAuth token cache) -> the fake GigaChat (OAuth + v1 chat) over HTTP."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.fakes.gigachat import FakeGigaChat
from tests.harness import GunicornServer, openai_client

pytestmark = pytest.mark.e2e

CLIENT_KEY = "test-key"
MODEL = "gigachat/GigaChat-2"
HI = [{"role": "user", "content": "Привет"}]
STATE_ID = "77d3fb14-457a-46ba-937e-8d856156d003"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather_forecast",
        "description": "Weather forecast",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@pytest.fixture
def fake() -> Iterator[FakeGigaChat]:
    with FakeGigaChat() as server:
        yield server


def config(fake: FakeGigaChat) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": MODEL,
                "provider": "gigachat",
                "url": fake.api_url,
                "auth_url": fake.auth_url,
                "scope": "GIGACHAT_API_PERS",
                "verify_ssl_certs": False,
                "token": "${GIGACHAT_TEST_TOKEN}",
                "requests_per_minute": 1000,
                "model_size": "SMALL",
            }
        ],
        "server": {"heartbeat_seconds": 1},
    }


@pytest.fixture
def proxy(fake: FakeGigaChat, gunicorn_server: Callable[..., GunicornServer]) -> GunicornServer:
    return gunicorn_server(
        config(fake),
        env={"AI_PROXY_API_KEYS": CLIENT_KEY, "GIGACHAT_TEST_TOKEN": "cid:secret"},
        threads=16,
    )


def test_smoke(fake, proxy):
    """One gunicorn for the whole flow (the logic is tested in-process in test_gigachat_http.py): a
    plain answer, an incremental stream, a tool call round trip and a streamed one, and no secret in
    the server's log even when the upstream echoes the token."""
    client = openai_client(proxy)
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be terse."}, *HI], temperature=0, max_tokens=64
    )
    assert answer.model == MODEL
    assert answer.choices[0].message.content == fake.reply and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens == 20
    (req,) = fake.chat_requests
    assert req.headers["Authorization"] == f"Bearer {fake.issued_tokens[0]}"
    assert req.json["messages"][0] == {"role": "system", "content": "Be terse."}
    assert req.json["max_tokens"] == 64 and 0 < req.json["temperature"] < 1e-3

    # a stream, relayed as the upstream flushes it: the first piece arrives before the last is sent
    fake.push("chat", fake.sse(fake.stream_events(["Один", ", два", ", три"]), chunk_delay=0.3))
    arrivals, texts, usage = [], [], None
    for chunk in client.chat.completions.create(
        model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True}
    ):
        assert chunk.model == MODEL
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            texts.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert texts == ["Один", ", два", ", три"]
    assert arrivals[0] < fake.chat_requests[-1].sent_at[2]
    assert usage is not None and usage.total_tokens == 20

    # a tool call, its result sent back as GigaChat's `function` message
    call_answer = fake.completion(
        function_call={"name": "weather_forecast", "arguments": {"location": "Москва"}}, state_id=STATE_ID
    )
    fake.push("chat", fake.answer(call_answer), fake.answer(fake.completion("жарко, +27")))
    messages: list[Any] = [{"role": "user", "content": "Какая погода в Москве?"}]
    choice = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL]).choices[0]
    (call,) = choice.message.tool_calls or []
    assert choice.finish_reason == "tool_calls" and call.id == STATE_ID
    assert json.loads(call.function.arguments) == {"location": "Москва"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 27}'},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "жарко, +27"
    sent = fake.chat_requests[-1].json["messages"]
    assert sent[1]["functions_state_id"] == STATE_ID
    assert sent[2] == {"role": "function", "name": "weather_forecast", "content": '{"temperature": 27}'}

    # a streamed tool call arrives whole
    fake.push("chat", fake.sse(fake.stream_events([], function_call={"name": "f", "arguments": {"a": 1}})))
    calls, finish = [], None
    for chunk in client.chat.completions.create(model=MODEL, messages=HI, tools=[WEATHER_TOOL], stream=True):
        if chunk.choices:
            calls += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and [json.loads(c.function.arguments) for c in calls] == [{"a": 1}]

    # an upstream that echoes the token: neither the client nor the log sees it
    fake.push("chat", fake.echoing_error(400))  # a client error: passed on, not retried
    failed = requests.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": MODEL, "messages": HI},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=10,
    )
    assert failed.status_code == 400 and "[redacted]" in failed.text
    assert len(fake.oauth_requests) == 1
    secrets = ["cid:secret", base64.b64encode(b"cid:secret").decode(), *fake.issued_tokens]
    assert [s for s in secrets if s in proxy.log_text() or s in failed.text] == []
