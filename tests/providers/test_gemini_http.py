"""The Gemini adapter against the fake Gemini upstream over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from app.config import HttpConfig, ModelConfig
from app.errors import (
    InvalidRequest,
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
)
from app.http import SessionPool
from app.providers import build_provider
from app.providers.gemini import Gemini
from tests.fakes.gemini import API_KEY, FakeGemini, function_call

HTTP = HttpConfig(connect_timeout=2.0, read_timeout=5.0, stream_idle_timeout=5.0)
HI = {"messages": [{"role": "user", "content": "Hi"}]}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture
def sessions() -> Iterator[SessionPool]:
    pool = SessionPool(HTTP)
    yield pool
    pool.close()


def adapter(
    fake: FakeGemini, sessions: SessionPool, token: str = API_KEY, upstream: str = "gemini-2.0-flash"
) -> Gemini:
    model = ModelConfig(
        name=f"gemini/{upstream}", provider="gemini", url=fake.base_url, upstream_model=upstream, token=token
    )
    provider = build_provider(model, sessions, HTTP)
    assert isinstance(provider, Gemini)
    return provider


def test_complete_sends_the_key_only_in_the_header(fake, sessions):
    got = adapter(fake, sessions).complete(
        {
            "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
            "temperature": 0.2,
            "max_tokens": 64,
        }
    )
    assert got.body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello! How can I help you today?",
    }
    assert got.body["usage"]["total_tokens"] == 19
    (req,) = fake.requests
    assert req.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert req.query == {}
    assert req.headers["x-goog-api-key"] == API_KEY
    assert req.json == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 64},
    }


def test_stream_arrives_incrementally(fake, sessions):
    fake.push_stream(["one", " two", " three"], chunk_delay=0.3)
    stream = adapter(fake, sessions).stream(HI)
    arrivals = []
    chunks = []
    try:
        for chunk in stream:
            arrivals.append(time.monotonic())
            chunks.append(chunk)
    finally:
        stream.close()
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:3]] == ["one", " two", " three"]
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["completion_tokens"] == 24
    assert arrivals[2] - arrivals[0] >= 0.5  # each event was read as soon as it was flushed
    (req,) = fake.requests
    assert req.path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    assert req.query == {"alt": "sse"}
    assert req.headers["x-goog-api-key"] == API_KEY


def test_tool_call_round_trip(fake, sessions):
    gemini = adapter(fake, sessions)
    fake.push_generate([function_call("get_weather", {"location": "Paris"})])
    ask = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER_TOOL]}
    first = gemini.complete({**ask, "tool_choice": "auto"}).body["choices"][0]
    assert first["finish_reason"] == "tool_calls"
    call = first["message"]["tool_calls"][0]

    fake.push_generate("It is sunny in Paris.")
    history = [
        *ask["messages"],
        first["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    second = gemini.complete({**ask, "messages": history}).body["choices"][0]
    assert second["message"]["content"] == "It is sunny in Paris."
    sent = fake.requests[1].json
    assert sent["contents"][1:] == [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}],
        },
    ]
    assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


def test_bad_key_is_an_auth_error_without_the_key(fake, sessions):
    with pytest.raises(UpstreamAuthError) as info:
        adapter(fake, sessions, token="AIzaSy-wrong-key").complete(HI)
    assert info.value.status == 502
    assert "AIzaSy-wrong-key" not in str(info.value)
    with pytest.raises(UpstreamAuthError):
        adapter(fake, sessions, token="AIzaSy-wrong-key").stream(HI)


@pytest.mark.parametrize("route", ["generate", "stream"])
def test_rate_limit_carries_retry_after(fake, sessions, route):
    fake.push_error("rate_limit", route=route, retry_delay="1.5s")
    gemini = adapter(fake, sessions)
    with pytest.raises(RateLimited) as info:
        gemini.complete(HI) if route == "generate" else gemini.stream(HI)
    assert info.value.retry_after == 1.5


@pytest.mark.parametrize(
    ("kind", "error"),
    [("internal", UpstreamError), ("unavailable", UpstreamError), ("not_found", UpstreamBadRequest)],
)
def test_http_errors_map(fake, sessions, kind, error):
    fake.push_error(kind)
    with pytest.raises(error) as info:
        adapter(fake, sessions).complete(HI)
    assert not isinstance(info.value, UpstreamAuthError)


def test_blocked_prompt_stream_is_a_400(fake, sessions):
    fake.push_blocked(route="stream")
    stream = adapter(fake, sessions).stream(HI)
    with pytest.raises(InvalidRequest) as info:
        list(stream)
    stream.close()
    assert info.value.code == "content_filter"


def test_stream_cut_off_before_finish_reason_raises(fake, sessions):
    fake.push_stream(["a", "b"], finish_reason=None)
    stream = adapter(fake, sessions).stream(HI)
    with pytest.raises(UpstreamError, match="ended before it was complete"):
        list(stream)
    stream.close()


def test_connection_dropped_mid_stream_raises(fake, sessions):
    fake.push_stream(["a", "b", "c"], drop_after=1)
    stream = adapter(fake, sessions).stream(HI)
    chunks = []
    with pytest.raises(UpstreamError):
        for chunk in stream:
            chunks.append(chunk)
    stream.close()
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["a"]


def test_fake_speaks_googles_dialect(fake):
    """The fake holds adapters to the real API's rules: key, field names, framing."""
    url = f"{fake.base_url}/gemini-2.0-flash"
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    assert requests.post(f"{url}:generateContent", json=body, timeout=5).status_code == 403
    assert requests.post(f"{url}:generateContent?key={API_KEY}", json=body, timeout=5).ok
    headers = {"x-goog-api-key": API_KEY}
    typo = requests.post(
        f"{url}:generateContent", json={**body, "generation_config": {}}, headers=headers, timeout=5
    )
    assert typo.status_code == 400 and "Unknown name" in typo.json()["error"]["message"]
    array = requests.post(f"{url}:streamGenerateContent", json=body, headers=headers, timeout=5).json()
    assert isinstance(array, list) and array[-1]["candidates"][0]["finishReason"] == "STOP"
    sse = requests.post(f"{url}:streamGenerateContent?alt=sse", json=body, headers=headers, timeout=5)
    assert sse.headers["Content-Type"] == "text/event-stream"
    assert sse.content.startswith(b'data: {"candidates": [') and sse.content.endswith(b"}\r\n\r\n")
    assert b"[DONE]" not in sse.content
