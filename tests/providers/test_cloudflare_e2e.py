"""A Workers AI model behind the real gateway under gunicorn, driven by the official `openai` SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import openai
import pytest
import requests

from tests.fakes import cloudflare as fake
from tests.fakes.cloudflare import FakeCloudflare
from tests.harness import GunicornServer, openai_client

NAME = "cloudflare/cf/meta/llama-3.1-8b-instruct"
KEY = "test-key"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


@pytest.fixture
def cloudflare() -> Iterator[FakeCloudflare]:
    with FakeCloudflare(gateway_token="gw-secret") as server:
        yield server


@pytest.fixture
def proxy(cloudflare: FakeCloudflare, gunicorn_server: Callable[..., GunicornServer]) -> GunicornServer:
    """The model through an authenticated AI Gateway (`cf-aig-authorization` from the model's headers)."""
    model = {
        "name": NAME,
        "provider": "cloudflare",
        "url": cloudflare.gateway_url,
        "token": fake.API_TOKEN,
        "headers": {"cf-aig-authorization": "Bearer gw-secret"},
    }
    return gunicorn_server({"models": [model]}, env={"AI_PROXY_API_KEYS": KEY})


def test_chat(proxy: GunicornServer, cloudflare: FakeCloudflare) -> None:
    answer = openai_client(proxy).chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "What is Cloudflare?"}], max_tokens=256
    )
    assert answer.model == NAME
    assert answer.choices[0].message.content == fake.CLOUDFLARE_IS
    assert answer.usage is not None and answer.usage.total_tokens == 75
    request = cloudflare.requests[-1]
    assert request.route == "gateway" and request.params["model"] == "@cf/meta/llama-3.1-8b-instruct"
    assert request.json == {
        "messages": [{"role": "user", "content": "What is Cloudflare?"}],
        "stream": False,
        "max_tokens": 256,
    }


def test_stream_is_incremental_and_ends_with_done(proxy: GunicornServer, cloudflare: FakeCloudflare) -> None:
    cloudflare.push_stream(["Once", " upon", " a", " time"], route="gateway", chunk_delay=0.25)
    with requests.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": NAME, "messages": [{"role": "user", "content": "Story"}], "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
        stream=True,
        timeout=10,
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith(b"data: ")]
    assert lines[-1] == b"data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == (
        "Once upon a time"
    )

    cloudflare.push_stream(["Once", " upon", " a", " time"], route="gateway", chunk_delay=0.25)
    stream = openai_client(proxy).chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": "Story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    started, times, usage = time.monotonic(), [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.monotonic() - started)
        usage = chunk.usage or usage
    assert len(times) == 4 and times[-1] - times[0] > 0.5  # pieces were not buffered into one
    assert usage is not None and usage.total_tokens == 762


def test_tool_call_round_trip(proxy: GunicornServer, cloudflare: FakeCloudflare) -> None:
    client = openai_client(proxy)
    messages: list[dict] = [{"role": "user", "content": "Weather in Paris?"}]
    cloudflare.push_answer(fake.tool_answer(), route="gateway")
    first = client.chat.completions.create(model=NAME, messages=messages, tools=[WEATHER_TOOL])
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = message.tool_calls or []
    assert call.id.startswith("call_")
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"location": "Paris"})
    assert cloudflare.requests[-1].json["tools"] == [WEATHER_TOOL]

    messages.append(message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 20}'})
    cloudflare.push_answer(fake.chat_answer("It is 20°C in Paris."), route="gateway")
    second = client.chat.completions.create(model=NAME, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "It is 20°C in Paris."
    sent = cloudflare.requests[-1].json["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": call.function.arguments},
            }
        ],
    }
    assert sent[2] == {
        "role": "tool",
        "content": '{"temp_c": 20}',
        "tool_call_id": call.id,
        "name": "get_weather",
    }


def test_upstream_errors_reach_the_sdk_as_openai_errors(
    proxy: GunicornServer, cloudflare: FakeCloudflare
) -> None:
    client = openai_client(proxy)
    hello = [{"role": "user", "content": "Hello"}]
    cloudflare.push_error("bad_input", route="gateway")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=NAME, messages=hello)
    assert fake.ERRORS["bad_input"][2] in bad.value.message

    cloudflare.push_error("daily_limit", route="gateway")
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=NAME, messages=hello, stream=True)
    assert int(limited.value.response.headers["Retry-After"]) > 0  # the free neurons come back at 00:00 UTC
