"""End to end: the official `openai` SDK -> the proxy under gunicorn (its GigaChat adapter with the
OAuth token cache) -> the fake GigaChat (OAuth + v1 chat) over HTTP."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


def test_chat(fake, proxy):
    answer = openai_client(proxy).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be terse."}, *HI],
        temperature=0,
        max_tokens=64,
    )
    assert answer.model == MODEL
    assert answer.choices[0].message.content == "Привет! Чем могу помочь?"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens == 20
    assert len(fake.oauth_requests) == 1
    (req,) = fake.chat_requests
    assert req.headers["Authorization"] == f"Bearer {fake.issued_tokens[0]}"
    assert req.json["model"] == "GigaChat-2"
    assert req.json["messages"][0] == {"role": "system", "content": "Be terse."}
    assert req.json["max_tokens"] == 64 and 0 < req.json["temperature"] < 1e-3
    log = proxy.log_text()
    assert "cid:secret" not in log and base64.b64encode(b"cid:secret").decode() not in log
    assert fake.issued_tokens[0] not in log


def test_concurrent_requests_share_one_token(fake, proxy):
    client = openai_client(proxy)

    def call(_: int) -> str | None:
        return client.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(call, range(12)))
    assert answers == ["Привет! Чем могу помочь?"] * 12
    assert len(fake.oauth_requests) == 1


def test_stream_is_incremental_and_ends_with_done(fake, proxy):
    fake.push("chat", fake.sse(fake.stream_events(["Один", ", два", ", три"]), chunk_delay=0.4))
    arrivals, texts, usage = [], [], None
    stream = openai_client(proxy).chat.completions.create(
        model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        assert chunk.model == MODEL
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            texts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert texts == ["Один", ", два", ", три"]
    assert arrivals[-1] - arrivals[0] >= 0.6  # relayed as the upstream flushed, not buffered
    assert usage is not None and usage.total_tokens == 20

    with requests.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": MODEL, "messages": HI, "stream": True},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        stream=True,
        timeout=10,
    ) as raw:
        assert raw.headers["Content-Type"].startswith("text/event-stream")
        events = [line for line in raw.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    last = json.loads(events[-2][len(b"data: ") :])
    assert last["object"] == "chat.completion.chunk"
    assert fake.chat_requests[-1].json["stream"] is True


def test_tool_call_round_trip(fake, proxy):
    client = openai_client(proxy)
    fake.push(
        "chat",
        fake.answer(
            fake.completion(
                function_call={"name": "weather_forecast", "arguments": {"location": "Москва"}},
                state_id=STATE_ID,
            )
        ),
    )
    messages: list[Any] = [{"role": "user", "content": "Какая погода в Москве?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.id == STATE_ID
    assert call.function.name == "weather_forecast"
    assert json.loads(call.function.arguments) == {"location": "Москва"}
    assert fake.chat_requests[0].json["functions"][0]["name"] == "weather_forecast"

    fake.push("chat", fake.answer(fake.completion("жарко, +27")))
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 27}'},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "жарко, +27"
    sent = fake.chat_requests[1].json["messages"]
    assert sent[1]["function_call"] == {"name": "weather_forecast", "arguments": {"location": "Москва"}}
    assert sent[1]["functions_state_id"] == STATE_ID
    assert sent[2] == {"role": "function", "name": "weather_forecast", "content": '{"temperature": 27}'}


def test_streamed_tool_call(fake, proxy):
    fake.push(
        "chat",
        fake.sse(
            fake.stream_events(
                [], function_call={"name": "weather_forecast", "arguments": {"location": "Москва"}}
            )
        ),
    )
    stream = openai_client(proxy).chat.completions.create(
        model=MODEL, messages=HI, tools=[WEATHER_TOOL], stream=True
    )
    calls, finish = [], None
    for chunk in stream:
        if chunk.choices:
            calls += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [json.loads(c.function.arguments) for c in calls] == [{"location": "Москва"}]
