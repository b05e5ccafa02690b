"""A Cohere v2 model behind the real gateway under gunicorn, driven by the official `openai` SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import openai
import pytest
import requests

from tests.fakes import cohere as fake
from tests.fakes.cohere import FakeCohere
from tests.harness import GunicornServer, openai_client

NAME = "cohere/command-a-03-2025"
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
def cohere() -> Iterator[FakeCohere]:
    with FakeCohere() as server:
        yield server


@pytest.fixture
def proxy(cohere: FakeCohere, gunicorn_server: Callable[..., GunicornServer]) -> GunicornServer:
    model = {"name": NAME, "provider": "cohere", "url": cohere.chat_url, "token": fake.API_KEY}
    return gunicorn_server({"models": [model]}, env={"AI_PROXY_API_KEYS": KEY})


def test_chat(proxy: GunicornServer, cohere: FakeCohere) -> None:
    answer = openai_client(proxy).chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Hello"}], temperature=0.3, max_tokens=200
    )
    assert answer.model == NAME
    assert answer.choices[0].message.content == "Hello! How can I help you today?"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens == 80
    sent = cohere.requests[-1].json
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("command-a-03-2025", 0.3, 200)


def test_stream_is_incremental_and_ends_with_done(proxy: GunicornServer, cohere: FakeCohere) -> None:
    cohere.push_stream(["Once", " upon", " a", " time"], chunk_delay=0.25)
    started = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    with requests.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": NAME, "messages": [{"role": "user", "content": "Story"}], "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
        stream=True,
        timeout=10,
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith(b"data: ")]
        for line in lines[:-1]:
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                arrivals.append((time.monotonic() - started, chunk["choices"][0]["delta"]["content"]))
    assert lines[-1] == b"data: [DONE]"
    assert "".join(text for _, text in arrivals) == "Once upon a time"

    # the same through the SDK, timing each piece as it arrives
    cohere.push_stream(["Once", " upon", " a", " time"], chunk_delay=0.25)
    stream = openai_client(proxy).chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Story"}], stream=True
    )
    started, times = time.monotonic(), []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.monotonic() - started)
    assert len(times) == 4 and times[-1] - times[0] > 0.5  # pieces were not buffered into one


def test_tool_call_round_trip(proxy: GunicornServer, cohere: FakeCohere) -> None:
    client = openai_client(proxy)
    messages: list[dict] = [{"role": "user", "content": "Weather in Paris?"}]
    cohere.push_answer(fake.tool_answer())
    first = client.chat.completions.create(model=NAME, messages=messages, tools=[WEATHER_TOOL])
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"location": "Paris"})
    assert cohere.requests[-1].json["tools"] == [WEATHER_TOOL]

    messages.append(message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 20}'})
    cohere.push_answer(fake.chat_answer("It is 20°C in Paris."))
    second = client.chat.completions.create(model=NAME, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "It is 20°C in Paris."
    sent = cohere.requests[-1].json["messages"]
    assert sent[1] == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
            }
        ],
        "tool_plan": "I will look up the weather in Paris.",
    }
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 20}'}


def test_upstream_errors_reach_the_sdk_as_openai_errors(proxy: GunicornServer, cohere: FakeCohere) -> None:
    client = openai_client(proxy)
    hello = [{"role": "user", "content": "Hello"}]
    cohere.push_error("bad_request")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=NAME, messages=hello)
    assert fake.ERRORS["bad_request"][1] in bad.value.message

    cohere.push_error("trial_rate_limit")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=NAME, messages=hello, stream=True)
