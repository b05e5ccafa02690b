"""Anthropic Messages end to end: the official `anthropic` SDK, gunicorn, a fake OpenAI upstream."""

from __future__ import annotations

import anthropic
import pytest
import requests

from tests.fakes.openai import FakeOpenAI, tool_call
from tests.fronts.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.harness import GunicornServer

pytestmark = pytest.mark.e2e

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(front_server: GunicornServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=front_server.url, api_key=CLIENT_KEY, max_retries=0, timeout=10)


def ask(client: anthropic.Anthropic, model: str = "fake/small-a", **kwargs):
    kwargs.setdefault("messages", [{"role": "user", "content": "Say hello"}])
    return client.messages.create(model=model, max_tokens=200, **kwargs)


def test_create(client, fake: FakeOpenAI):
    fake.push_chat(content="Hello from upstream", prompt_tokens=21, completion_tokens=4)
    message = ask(
        client, system=[{"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello from upstream"
    assert message.model == "fake/small-a" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 21 and message.usage.output_tokens == 4
    sent = fake.chat_requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be kind."}
    assert sent["max_tokens"] == 200 and sent["model"] == "fake/small-a"


def test_create_with_beta_query_and_bearer_auth(front_server, fake: FakeOpenAI):
    fake.push_chat(content="Beta hello")
    answer = requests.post(
        f"{front_server.url}/v1/messages?beta=true",
        headers={
            "Authorization": f"Bearer {CLIENT_KEY}",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
        },
        json={
            "model": "claude-sonnet-4-5",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == [{"type": "text", "text": "Beta hello"}]
    assert answer.headers["X-AI-Proxy-Model"] == "fake/big"  # by the alias claude-* -> BIG
    assert answer.json()["model"] == "fake/big"
    assert answer.headers["X-AI-Proxy-Warning"].endswith("ignored: web_search")
    assert [t["function"]["name"] for t in fake.chat_requests[-1].json["tools"]] == ["get_weather"]


def test_stream(client, fake: FakeOpenAI):
    fake.push_chat(content=["Hel", "lo", " world"], prompt_tokens=15, completion_tokens=3)
    with client.messages.stream(
        model="fake/small-a", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert message.content[0].text == "Hello world"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3


def test_tool_round_trip(client, fake: FakeOpenAI):
    fake.push_chat(tool_calls=[tool_call("get_weather", {"city": "Paris"}, id="call_w1")])
    first = ask(client, tools=[WEATHER], messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    assert (use.id, use.name, use.input) == ("call_w1", "get_weather", {"city": "Paris"})

    fake.push_chat(content="It is 18C in Paris.")
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C, sunny"}],
        },
    ]
    second = ask(client, tools=[WEATHER], messages=history)
    assert second.content[0].text == "It is 18C in Paris."
    sent = fake.chat_requests[-1].json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_w1"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_w1", "content": "18C, sunny"}


def test_streamed_tool_use(client, fake: FakeOpenAI):
    fake.push_chat(tool_calls=[tool_call("get_weather", {"city": "Lisbon"}, id="call_s1")])
    with client.messages.stream(
        model="fake/small-a",
        max_tokens=100,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "Lisbon?"}],
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "tool_use" and message.content[0].input == {"city": "Lisbon"}


def test_count_tokens(client):
    short = client.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "hi"}])
    long = client.messages.count_tokens(
        model="claude-x", messages=[{"role": "user", "content": "word " * 400}]
    )
    assert 1 <= short.input_tokens < long.input_tokens


def test_errors_by_class(front_server, client, fake: FakeOpenAI):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic.Anthropic(base_url=front_server.url, api_key="wrong", max_retries=0).messages.create(
            model="fake/small-a", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as caught:
        ask(client, model="no-such-model")
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": caught.value.body["error"]["message"]},
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(client, messages=[])
    assert caught.value.body["error"]["type"] == "invalid_request_error"

    fake.push_error("rate_limit", retry_after=7)
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(client, model="fake/limited")
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert int(caught.value.response.headers["retry-after"]) >= 1

    fake.push_error("server_error")
    fake.push_error("server_error")
    with pytest.raises(anthropic.OverloadedError) as caught:
        ask(client, model="SMALL")
    assert caught.value.status_code == 529 and caught.value.body["error"]["type"] == "overloaded_error"
    assert UPSTREAM_KEY not in str(caught.value.body)


def test_failure_mid_stream_is_an_error_event(client, fake: FakeOpenAI):
    fake.push_chat(content=["one", " two", " three"], error_after=2)
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model="fake/small-a", max_tokens=100, messages=[{"role": "user", "content": "count"}]
        ) as stream,
    ):
        for event in stream:
            if event.type == "text":
                texts.append(event.text)
    assert texts == ["one", " two"]
    assert type(caught.value) is anthropic.APIStatusError  # an error event in a 200 stream
    assert caught.value.body["error"]["type"] == "api_error"


def test_root_answers_without_auth(front_server):
    assert requests.head(front_server.url + "/", timeout=5).status_code == 200
    assert requests.get(front_server.url + "/", timeout=5).status_code == 200
