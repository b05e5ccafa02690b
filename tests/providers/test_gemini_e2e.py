"""End to end: the official `openai` SDK -> the proxy under gunicorn -> the fake Gemini upstream."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import requests

from tests.fakes.gemini import API_KEY, FakeGemini, function_call
from tests.harness import GunicornServer, openai_client

pytestmark = pytest.mark.e2e

CLIENT_KEY = "test-key"
FLASH = "gemini/gemini-2.0-flash"
LITE = "gemini/gemini-2.0-flash-lite"
HI = [{"role": "user", "content": "Hi"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


def config(fake: FakeGemini, token: str = API_KEY) -> dict[str, Any]:
    """Two Gemini models in group SMALL on the fake; FLASH wins by priority."""
    models = [
        {
            "name": name,
            "provider": "gemini",
            "url": fake.base_url,
            "token": token,
            "priority": priority,
            "requests_per_minute": 100,
            "model_size": "SMALL",
        }
        for priority, name in ((1, FLASH), (2, LITE))
    ]
    return {"models": models, "server": {"heartbeat_seconds": 1}}


@pytest.fixture
def proxy(fake: FakeGemini, gunicorn_server: Callable[..., GunicornServer]) -> GunicornServer:
    return gunicorn_server(config(fake), env={"AI_PROXY_API_KEYS": CLIENT_KEY})


def test_chat(fake, proxy):
    answer = openai_client(proxy).chat.completions.create(
        model=FLASH,
        messages=[{"role": "system", "content": "Be terse."}, *HI],
        temperature=0.2,
    )
    assert answer.model == FLASH
    assert answer.choices[0].message.content == "Hello! How can I help you today?"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens == 19
    (req,) = fake.requests
    assert req.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert req.query == {} and req.headers["x-goog-api-key"] == API_KEY
    assert req.json["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert API_KEY not in proxy.log_text()


def test_stream_is_incremental_and_ends_with_done(fake, proxy):
    fake.push_stream(["one", " two", " three"], chunk_delay=0.4)
    arrivals = []
    texts = []
    stream = openai_client(proxy).chat.completions.create(
        model=FLASH, messages=HI, stream=True, stream_options={"include_usage": True}
    )
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            texts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert texts == ["one", " two", " three"]
    assert arrivals[-1] - arrivals[0] >= 0.6  # relayed as the upstream flushed, not buffered
    assert usage is not None and usage.completion_tokens == 24

    fake.push_stream(["a", "b"])
    with requests.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": FLASH, "messages": HI, "stream": True},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        stream=True,
        timeout=10,
    ) as raw:
        assert raw.headers["Content-Type"].startswith("text/event-stream")
        events = [line for line in raw.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    assert fake.requests[-1].query == {"alt": "sse"}


def test_tool_call_round_trip(fake, proxy):
    client = openai_client(proxy)
    fake.push_generate([function_call("get_weather", {"location": "Paris"})])
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=FLASH, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == '{"location":"Paris"}'

    fake.push_generate("Sunny, 21 degrees.")
    messages += [choice.message, {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}]
    second = client.chat.completions.create(model=FLASH, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "Sunny, 21 degrees."
    assert fake.requests[-1].json["contents"][-1] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temperature": 21}}}],
    }


def test_rate_limit_falls_back_in_a_group_and_rests_the_model(fake, proxy):
    client = openai_client(proxy)
    fake.push_error("rate_limit", retry_delay="37s")
    answer = client.chat.completions.with_raw_response.create(model="SMALL", messages=HI)
    assert answer.headers["X-AI-Proxy-Model"] == LITE
    assert answer.parse().choices[0].message.content == "Hello! How can I help you today?"
    assert [r.params["model"] for r in fake.requests] == ["gemini-2.0-flash", "gemini-2.0-flash-lite"]

    with pytest.raises(openai.RateLimitError) as info:  # FLASH rests for RetryInfo's 37 s
        client.chat.completions.create(model=FLASH, messages=HI)
    assert 0 < float(info.value.response.headers["Retry-After"]) <= 37
    assert len(fake.requests) == 2

    fake.push_error("rate_limit", retry_delay="10s")  # longer than retry.max_delay: not retried
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=LITE, messages=HI)


def test_bad_key_is_a_502_that_reveals_no_key(fake, gunicorn_server):
    proxy = gunicorn_server(config(fake, token="AIzaSy-wrong-key"), env={"AI_PROXY_API_KEYS": CLIENT_KEY})
    with pytest.raises(openai.InternalServerError) as info:
        openai_client(proxy).chat.completions.create(model=FLASH, messages=HI)
    assert info.value.status_code == 502
    assert "AIzaSy-wrong-key" not in info.value.response.text
    assert "AIzaSy-wrong-key" not in proxy.log_text()
