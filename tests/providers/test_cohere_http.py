"""The Cohere adapter over real HTTP against FakeCohere."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import HttpConfig, ModelConfig
from app.errors import RateLimited, UpstreamAuthError, UpstreamBadRequest, UpstreamError
from app.http import SessionPool
from app.providers import Provider, build_provider
from app.providers.cohere import Cohere
from app.providers.openai import OpenAICompatible
from tests.fakes import cohere as fake
from tests.fakes.cohere import FakeCohere

HTTP = HttpConfig(connect_timeout=2, read_timeout=5, stream_idle_timeout=5)
NAME = "cohere/command-a-03-2025"
HELLO = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 50}


@pytest.fixture
def cohere() -> Iterator[FakeCohere]:
    with FakeCohere() as server:
        yield server


def adapter(url: str, token: str = fake.API_KEY) -> Provider:
    model = ModelConfig(
        name=NAME, provider="cohere", url=url, upstream_model="command-a-03-2025", token=token
    )
    return build_provider(model, SessionPool(HTTP), HTTP)


def test_complete(cohere: FakeCohere) -> None:
    provider = adapter(cohere.chat_url)
    assert isinstance(provider, Cohere)
    result = provider.complete({**HELLO, "top_p": 0.5})
    assert result.body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello! How can I help you today?",
    }
    assert result.body["usage"]["total_tokens"] == 80
    assert result.headers["x-trial-endpoint-call-remaining"] == "19"  # the router reads these
    (request,) = cohere.requests
    assert request.path == "/v2/chat"
    assert request.headers["Authorization"] == f"Bearer {fake.API_KEY}"
    assert request.json == {
        "model": "command-a-03-2025",
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": False,
        "p": 0.5,
        "max_tokens": 50,
    }


def test_tool_call_answer(cohere: FakeCohere) -> None:
    cohere.push_answer(fake.tool_answer())
    message = adapter(cohere.chat_url).complete(HELLO).body["choices"][0]["message"]
    assert message["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"location":"Paris"}',
    }


def test_stream_arrives_incrementally(cohere: FakeCohere) -> None:
    events = fake.stream_events(["Once", " upon", " a", " time"])
    cohere.push_stream(events, chunk_delay=0.15)
    stream = adapter(cohere.chat_url).stream(HELLO)
    assert stream.headers["x-trial-endpoint-call-limit"] == "20"
    got: list[dict[str, Any]] = []
    sent_when_first_text_arrived = None
    try:
        for chunk in stream:
            got.append(chunk)
            delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
            if delta.get("content") and sent_when_first_text_arrived is None:
                sent_when_first_text_arrived = len(cohere.requests[0].sent_at)
    finally:
        stream.close()
    assert sent_when_first_text_arrived is not None and sent_when_first_text_arrived < len(events) - 2
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in got if c["choices"])
    assert text == "Once upon a time"
    assert got[-1]["choices"] == [] and got[-1]["usage"]["total_tokens"] == 73
    assert cohere.requests[0].json["stream"] is True
    assert cohere.requests[0].headers["Accept"] == "text/event-stream"


def test_tool_call_stream(cohere: FakeCohere) -> None:
    cohere.push_stream(fake.tool_stream_events(), chunk_delay=0.01)
    stream = adapter(cohere.chat_url).stream(HELLO)
    chunks = list(stream)
    stream.close()
    arguments = "".join(
        call["function"]["arguments"]
        for c in chunks
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls", [])
    )
    assert json.loads(arguments) == {"location": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


def test_stream_cut_off_raises(cohere: FakeCohere) -> None:
    cohere.push_stream(fake.stream_events(["a", "b", "c"]), drop_after=4)
    stream = adapter(cohere.chat_url).stream(HELLO)
    with pytest.raises(UpstreamError):
        list(stream)
    stream.close()


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("trial_rate_limit", RateLimited),
        ("bad_request", UpstreamBadRequest),
        ("server_error", UpstreamError),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
def test_errors(cohere: FakeCohere, kind: str, error: type[Exception], streaming: bool) -> None:
    cohere.push_error(kind)
    provider = adapter(cohere.chat_url)
    with pytest.raises(error) as caught:
        provider.stream(HELLO) if streaming else provider.complete(HELLO)
    if error is UpstreamBadRequest:
        assert caught.value.message == fake.ERRORS[kind][1]


def test_rate_limit_retry_after_header(cohere: FakeCohere) -> None:
    cohere.push_error("rate_limit", headers={"Retry-After": "7"})
    with pytest.raises(RateLimited) as caught:
        adapter(cohere.chat_url).complete(HELLO)
    assert caught.value.retry_after == 7


def test_rejected_key_is_an_auth_error(cohere: FakeCohere) -> None:
    with pytest.raises(UpstreamAuthError) as caught:
        adapter(cohere.chat_url, token="wrong").complete(HELLO)
    assert "wrong" not in caught.value.message


def test_compatibility_api_uses_the_openai_path(cohere: FakeCohere) -> None:
    provider = adapter(cohere.compat_url)
    assert isinstance(provider, OpenAICompatible)
    answer = provider.complete(HELLO).body
    assert answer["choices"][0]["message"]["content"] == "Recursive loops, unraveling."
    assert cohere.requests[-1].json == {**HELLO, "model": "command-a-03-2025"}
    stream = provider.stream({**HELLO, "stream": True})  # the gateway passes the client's body on
    started = time.monotonic()
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in stream if c["choices"])
    stream.close()
    assert text == "Hello there!" and time.monotonic() - started < 5
    assert cohere.requests[-1].route == "compat"
