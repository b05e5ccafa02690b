"""The Cloudflare Workers AI adapter over real HTTP against FakeCloudflare."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import HttpConfig, ModelConfig, default_upstream_model
from app.errors import RateLimited, UpstreamAuthError, UpstreamBadRequest, UpstreamError
from app.http import SessionPool
from app.providers import ChunkStream, Provider, build_provider
from app.providers.cloudflare import Cloudflare
from app.providers.openai import OpenAICompatible
from tests.fakes import cloudflare as fake
from tests.fakes.cloudflare import FakeCloudflare

HTTP = HttpConfig(connect_timeout=2, read_timeout=5, stream_idle_timeout=5)
NAME = "cloudflare/cf/meta/llama-3.1-8b-instruct"
HELLO = {
    "messages": [
        {"role": "system", "content": "You are a friendly assistant"},
        {"role": "user", "content": "What is Cloudflare?"},
    ],
    "max_tokens": 256,
    "temperature": 0.6,
}


@pytest.fixture
def cloudflare() -> Iterator[FakeCloudflare]:
    with FakeCloudflare(gateway_token="gw-secret") as server:
        yield server


def adapter(url: str, token: str = fake.API_TOKEN, headers: dict[str, str] | None = None) -> Provider:
    model = ModelConfig(
        name=NAME,
        provider="cloudflare",
        url=url,
        upstream_model=default_upstream_model(NAME, "cloudflare"),
        token=token,
        headers=headers or {},
    )
    return build_provider(model, SessionPool(HTTP), HTTP)


def drain(stream: ChunkStream) -> list[dict[str, Any]]:
    try:
        return list(stream)
    finally:
        stream.close()


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_complete(cloudflare: FakeCloudflare) -> None:
    provider = adapter(cloudflare.run_url)
    assert isinstance(provider, Cloudflare)
    result = provider.complete(HELLO)
    assert result.body["choices"][0]["message"]["content"].startswith("Cloudflare is a global network")
    assert result.body["usage"] == {"prompt_tokens": 30, "completion_tokens": 45, "total_tokens": 75}
    assert "cf-ray" in result.headers
    (request,) = cloudflare.requests
    assert request.route == "run" and request.params == {"account": fake.ACCOUNT_ID, "model": fake.MODEL}
    assert request.headers["Authorization"] == f"Bearer {fake.API_TOKEN}"
    assert request.json == {**HELLO, "stream": False}


def test_url_that_already_names_the_model(cloudflare: FakeCloudflare) -> None:
    provider = adapter(f"{cloudflare.run_url}/{fake.MODEL}")
    assert provider.complete(HELLO).body["choices"][0]["message"]["content"]
    cloudflare.push_stream(["Hi"])
    assert text_of(drain(provider.stream(HELLO))) == "Hi"
    assert [(r.route, r.params["model"]) for r in cloudflare.requests] == [("run", fake.MODEL)] * 2


def test_tool_call_answer(cloudflare: FakeCloudflare) -> None:
    cloudflare.push_answer(fake.tool_answer())
    choice = adapter(cloudflare.run_url).complete(HELLO).body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"location": "Paris"}


def test_ai_gateway_url_with_its_token(cloudflare: FakeCloudflare) -> None:
    provider = adapter(cloudflare.gateway_url, headers={"cf-aig-authorization": "Bearer gw-secret"})
    cloudflare.push_stream(["Hi", "!"], route="gateway")
    assert text_of(drain(provider.stream(HELLO))) == "Hi!"
    request = cloudflare.requests[-1]
    assert request.route == "gateway" and request.params["model"] == fake.MODEL
    assert request.headers["cf-aig-authorization"] == "Bearer gw-secret"
    with pytest.raises(UpstreamAuthError):
        adapter(cloudflare.gateway_url).complete(HELLO)


def test_stream_arrives_incrementally(cloudflare: FakeCloudflare) -> None:
    events = fake.stream_events()
    cloudflare.push_stream(events, chunk_delay=0.15)
    stream = adapter(cloudflare.run_url).stream(HELLO)
    got: list[dict[str, Any]] = []
    sent_when_first_text_arrived = None
    try:
        for chunk in stream:
            got.append(chunk)
            if chunk["choices"] and sent_when_first_text_arrived is None:
                sent_when_first_text_arrived = len(cloudflare.requests[0].sent_at)
    finally:
        stream.close()
    assert sent_when_first_text_arrived is not None and sent_when_first_text_arrived < len(events) - 2
    assert text_of(got) == "Hello! How can I help?"
    assert [c["choices"][0]["finish_reason"] for c in got if c["choices"]][-1] == "stop"
    assert got[-1]["usage"] == {"prompt_tokens": 755, "completion_tokens": 7, "total_tokens": 762}
    assert cloudflare.requests[0].json["stream"] is True


def test_openai_shaped_stream(cloudflare: FakeCloudflare) -> None:
    cloudflare.push_stream(fake.openai_stream_events(["Hi", " there"]), chunk_delay=0.01)
    chunks = drain(adapter(cloudflare.run_url).stream(HELLO))
    assert text_of(chunks) == "Hi there"
    assert chunks[-1]["usage"]["total_tokens"] == 150


@pytest.mark.parametrize("drop_after", [2, 9])
def test_stream_cut_off_raises(cloudflare: FakeCloudflare, drop_after: int) -> None:
    """Cut mid-text, or after the usage event but before [DONE]."""
    cloudflare.push_stream(fake.stream_events(), drop_after=drop_after)
    with pytest.raises(UpstreamError):
        drain(adapter(cloudflare.run_url).stream(HELLO))


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("daily_limit", RateLimited),
        ("capacity", RateLimited),
        ("bad_input", UpstreamBadRequest),
        ("internal", UpstreamError),
        ("forbidden", UpstreamAuthError),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
def test_errors(cloudflare: FakeCloudflare, kind: str, error: type[Exception], streaming: bool) -> None:
    cloudflare.push_error(kind)
    provider = adapter(cloudflare.run_url)
    with pytest.raises(error) as caught:
        provider.stream(HELLO) if streaming else provider.complete(HELLO)
    if kind == "daily_limit":
        assert 0 < caught.value.retry_after <= 86400
    if error is UpstreamBadRequest:
        assert caught.value.message == fake.ERRORS[kind][2]


def test_unsuccessful_200(cloudflare: FakeCloudflare) -> None:
    cloudflare.push_answer(fake.error_body(3040, "Capacity temporarily exceeded, please try again."))
    with pytest.raises(RateLimited):
        adapter(cloudflare.run_url).complete(HELLO)


def test_rejected_token(cloudflare: FakeCloudflare) -> None:
    with pytest.raises(UpstreamAuthError) as caught:
        adapter(cloudflare.run_url, token="wrong").complete(HELLO)
    assert "wrong" not in caught.value.message


def test_openai_compatible_endpoint_uses_the_openai_path(cloudflare: FakeCloudflare) -> None:
    provider = adapter(cloudflare.compat_url)
    assert isinstance(provider, OpenAICompatible)
    answer = provider.complete(HELLO).body
    assert answer["choices"][0]["message"]["content"] == "Cloudflare is ..."
    assert cloudflare.requests[-1].json == {**HELLO, "model": fake.MODEL}
    chunks = drain(provider.stream({**HELLO, "stream": True}))  # the gateway passes the client's body on
    assert text_of(chunks) == "Hello there!" and chunks[-1]["usage"]["total_tokens"] == 12
    assert cloudflare.requests[-1].route == "compat"
