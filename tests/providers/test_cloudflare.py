"""Cloudflare Workers AI translation, from the documented shapes (no network)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app.config import HttpConfig, ModelConfig, default_upstream_model
from app.errors import (
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
)
from app.http import SessionPool
from app.providers import adapter_path
from app.providers.cloudflare import Cloudflare, build_payload, parse_chunks, parse_completion, parse_error
from app.sse import iter_sse
from tests.fakes import cloudflare as fake

NAME = "cloudflare/cf/meta/llama-3.1-8b-instruct"
RUN_URL = "https://api.cloudflare.com/client/v4/accounts/acc/ai/run"


def chunks_of(events: list[bytes]) -> list[dict[str, Any]]:
    return list(parse_chunks(iter_sse(events), NAME))


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def model(url: str = RUN_URL, **kwargs: Any) -> ModelConfig:
    upstream = default_upstream_model(NAME, "cloudflare")
    return ModelConfig(
        name=NAME, provider="cloudflare", url=url, upstream_model=upstream, token="t", **kwargs
    )


def provider(url: str = RUN_URL, **kwargs: Any) -> Cloudflare:
    return Cloudflare(model(url, **kwargs), SessionPool(HttpConfig()), HttpConfig())


# --- requests -------------------------------------------------------------------------------------


def test_payload_messages_and_sampling() -> None:
    body = {
        "model": NAME,
        "messages": [
            {"role": "system", "content": "You are a friendly assistant"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "Cloudflare?"}],
            },
        ],
        "max_tokens": 256,
        "temperature": 0.6,
        "top_p": 0.9,
        "seed": 1,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.25,
        "stop": ["\n\n"],
        "n": 1,
        "user": "u1",
    }
    assert build_payload(body, stream=False) == {
        "messages": [
            {"role": "system", "content": "You are a friendly assistant"},
            {"role": "user", "content": "What is\nCloudflare?"},
        ],
        "stream": False,
        "temperature": 0.6,
        "top_p": 0.9,
        "seed": 1,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.25,
        "max_tokens": 256,
    }


def test_payload_tool_round_trip() -> None:
    call = {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
    }
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": True},
    }
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp": 20}'},
        ],
        "tools": [tool],
        "tool_choice": "auto",
        "max_completion_tokens": 64,
    }
    payload = build_payload(body, stream=True)
    assert payload["messages"][1:] == [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": '{"temp": 20}', "tool_call_id": "call_abc", "name": "get_weather"},
    ]
    assert payload["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    assert (payload["tool_choice"], payload["max_tokens"], payload["stream"]) == ("auto", 64, True)


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "json_schema": {"name": "country", "schema": {"type": "object"}}},
            {"type": "json_schema", "json_schema": {"type": "object"}},
        ),
    ],
)
def test_payload_response_format(response_format: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert (
        build_payload({"messages": [], "response_format": response_format}, False).get("response_format")
        == expected
    )


@pytest.mark.parametrize(
    ("url", "called"),
    [
        (RUN_URL, RUN_URL + "/@cf/meta/llama-3.1-8b-instruct"),
        (RUN_URL + "/", RUN_URL + "/@cf/meta/llama-3.1-8b-instruct"),
        (
            "https://gateway.ai.cloudflare.com/v1/acc/default/workers-ai",
            "https://gateway.ai.cloudflare.com/v1/acc/default/workers-ai/@cf/meta/llama-3.1-8b-instruct",
        ),
        # a URL that already names the model is called as it is (the rule images and embeddings use)
        (RUN_URL + "/@cf/meta/llama-3.1-8b-instruct", RUN_URL + "/@cf/meta/llama-3.1-8b-instruct"),
    ],
)
def test_request_url_and_headers(url: str, called: str) -> None:
    request = provider(url, headers={"cf-aig-authorization": "Bearer gw"}).build_request(
        {"messages": []}, False
    )
    assert request.url == called
    assert request.headers["Authorization"] == "Bearer t"
    assert request.headers["cf-aig-authorization"] == "Bearer gw"
    assert json.loads(request.payload) == {"messages": [], "stream": False}


@pytest.mark.parametrize(
    "url",
    [
        "https://api.cloudflare.com/client/v4/accounts/acc/ai/v1/chat/completions",
        "https://gateway.ai.cloudflare.com/v1/acc/default/workers-ai/v1/chat/completions",
    ],
)
def test_openai_compatible_urls_take_the_openai_path(url: str) -> None:
    assert adapter_path(model(RUN_URL)) == "app.providers.cloudflare:Cloudflare"
    assert adapter_path(model(url)) == "app.providers.openai:OpenAICompatible"


# --- answers --------------------------------------------------------------------------------------


def test_text_answer() -> None:
    out = parse_completion(fake.chat_answer(), NAME)
    assert out["id"].startswith("chatcmpl-")
    assert (out["object"], out["model"]) == ("chat.completion", NAME)
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": fake.CLOUDFLARE_IS},
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {"prompt_tokens": 30, "completion_tokens": 45, "total_tokens": 75}


def test_tool_call_answer() -> None:
    answer = fake.tool_answer([("get_weather", {"location": "Paris"}), ("get_time", {})])
    choice = parse_completion(answer, NAME)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"location":"Paris"}'},
        {"name": "get_time", "arguments": "{}"},
    ]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert calls[0]["id"] != calls[1]["id"]


def test_json_mode_object_answer_becomes_a_json_string() -> None:
    answer = fake.envelope({"response": {"name": "India", "capital": "New Delhi"}})
    content = parse_completion(answer, NAME)["choices"][0]["message"]["content"]
    assert json.loads(content) == {"name": "India", "capital": "New Delhi"}


def test_openai_shaped_result_passes_through() -> None:
    result = {
        "id": "id-1744412345678",
        "object": "chat.completion",
        "created": 1744412345,
        "model": "@cf/google/gemma-3-12b-it",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    assert parse_completion(fake.envelope(result), NAME) == result


def test_unsuccessful_envelope_with_200_raises() -> None:
    with pytest.raises(RateLimited):
        parse_completion(fake.error_body(3040, "Capacity temporarily exceeded, please try again."), NAME)
    with pytest.raises(UpstreamError, match="Internal server error"):
        parse_completion(fake.error_body(8005, "Internal server error"), NAME)


# --- streams --------------------------------------------------------------------------------------


def test_native_stream() -> None:
    chunks = chunks_of(fake.stream_events())
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == NAME for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    got = deltas(chunks)
    assert got[0] == {"role": "assistant", "content": "Hello"}
    assert "".join(d.get("content", "") for d in got) == "Hello! How can I help?"
    assert got[-1] == {} and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-2]] == [None] * 7
    assert chunks[-1] == {
        **chunks[-1],
        "choices": [],
        "usage": {"prompt_tokens": 755, "completion_tokens": 7, "total_tokens": 762},
    }
    assert not any("p" in d for d in got)


def test_openai_shaped_stream_uses_the_final_cumulative_usage() -> None:
    chunks = chunks_of(fake.openai_stream_events(["Hi", " there"]))
    got = deltas(chunks)
    assert got == [{"content": "Hi", "role": "assistant"}, {"content": " there"}, {"content": ""}]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, None, "stop"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 147, "completion_tokens": 3, "total_tokens": 150}
    assert all("p" not in c and (c["choices"] == [] or "usage" not in c) for c in chunks)


def test_native_stream_tool_calls() -> None:
    events = [
        b'data: {"response":"","tool_calls":[{"name":"get_weather","arguments":{"location":"Paris"}}]}\n\n',
        b'data: {"response":"","usage":{"prompt_tokens":120,"completion_tokens":18,"total_tokens":138}}\n\n',
        b"data: [DONE]\n\n",
    ]
    chunks = chunks_of(events)
    call = deltas(chunks)[0]["tool_calls"][0]
    assert call["index"] == 0 and call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"location":"Paris"}'}
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_shaped_stream_tool_call_fragments() -> None:
    def chunk(tool_call: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"delta": {"content": None, "tool_calls": [tool_call]}, "finish_reason": finish, "index": 0}
        return b"data: " + json.dumps({"choices": [choice], "p": "x"}).encode() + b"\n\n"

    events = [
        chunk({"id": "chatcmpl-tool-1", "type": "function", "index": 0, "function": {"name": "get_weather"}}),
        chunk({"index": 0, "function": {"arguments": '{"location":'}}),
        chunk({"index": 0, "function": {"arguments": '"Paris"}'}}),
        chunk(
            {"id": None, "type": None, "index": 0, "function": {"name": None, "arguments": None}},
            "tool_calls",
        ),
        b'data: {"response":"","usage":{"prompt_tokens":120,"completion_tokens":18,"total_tokens":138}}\n\n',
        b"data: [DONE]\n\n",
    ]
    got = deltas(chunks_of(events))
    assert got[0]["tool_calls"] == [
        {
            "index": 0,
            "id": "chatcmpl-tool-1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
    ]
    assert [d["tool_calls"][0]["function"]["arguments"] for d in got[1:3]] == ['{"location":', '"Paris"}']
    assert got[3] == {}


@pytest.mark.parametrize("cut", [0, 3, -1])
def test_stream_without_done_raises(cut: int) -> None:
    with pytest.raises(UpstreamError, match="ended before it was complete"):
        chunks_of(fake.stream_events()[:cut])


# --- errors ---------------------------------------------------------------------------------------

MIDNIGHT_MINUS_90S = datetime(2026, 3, 1, 23, 58, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("auth", UpstreamAuthError),
        ("forbidden", UpstreamAuthError),
        ("daily_limit", RateLimited),
        ("account_limited", RateLimited),
        ("capacity", RateLimited),
        ("capacity_500", RateLimited),
        ("model_rate_limit", RateLimited),
        ("bad_input", UpstreamBadRequest),
        ("no_such_model", UpstreamBadRequest),
        ("internal", UpstreamError),
    ],
)
def test_errors(kind: str, error: type[Exception]) -> None:
    status, code, message = fake.ERRORS[kind]
    got = parse_error(
        status, json.dumps(fake.error_body(code, message)).encode(), {}, NAME, MIDNIGHT_MINUS_90S
    )
    assert type(got) is error
    if error is UpstreamBadRequest:
        assert got.message == message
    if kind in ("daily_limit", "account_limited"):
        assert got.retry_after == 90  # the free allocation comes back at 00:00 UTC
    elif error is RateLimited:
        assert got.retry_after is None


def test_rate_limit_retry_after_header() -> None:
    status, code, message = fake.ERRORS["model_rate_limit"]
    got = provider().parse_error(
        status, json.dumps(fake.error_body(code, message)).encode(), {"retry-after": "1"}
    )
    assert isinstance(got, RateLimited) and got.retry_after == 1


def test_gateway_and_unreadable_errors() -> None:
    assert isinstance(
        parse_error(401, json.dumps(fake.gateway_error_body()).encode(), {}, NAME), UpstreamAuthError
    )
    got = parse_error(502, b"<html>Bad gateway</html>", {}, NAME)
    assert type(got) is UpstreamError and "502" in got.message
