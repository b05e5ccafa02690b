"""Cohere v2 translation, from the documented shapes (no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.config import HttpConfig, ModelConfig
from app.errors import (
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
)
from app.http import SessionPool
from app.providers import adapter_path
from app.providers.cohere import Cohere, build_payload, parse_chunks, parse_completion
from app.sse import iter_sse
from tests.fakes import cohere as fake

NAME = "cohere/command-a-03-2025"


def chunks_of(events: list[bytes]) -> list[dict[str, Any]]:
    return list(parse_chunks(iter_sse(events), NAME))


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def model(url: str = "https://api.cohere.com/v2/chat") -> ModelConfig:
    return ModelConfig(name=NAME, provider="cohere", url=url, upstream_model="command-a-03-2025", token="k")


# --- requests -------------------------------------------------------------------------------------


def test_payload_messages_and_sampling() -> None:
    body = {
        "model": NAME,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Weather?"},
        ],
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 200,
        "stop": "END",
        "seed": 7,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "n": 1,
        "user": "u1",
        "logprobs": False,
    }
    assert build_payload(body, "command-a-03-2025", stream=False) == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Weather?"},
        ],
        "stream": False,
        "temperature": 0.3,
        "p": 0.9,
        "seed": 7,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "max_tokens": 200,
        "stop_sequences": ["END"],
    }


def test_payload_prefers_max_completion_tokens_and_keeps_stop_lists() -> None:
    body = {"messages": [], "max_tokens": 10, "max_completion_tokens": 20, "stop": ["a", "b"]}
    payload = build_payload(body, "m", stream=True)
    assert (payload["max_tokens"], payload["stop_sequences"], payload["stream"]) == (20, ["a", "b"], True)


def test_payload_tool_round_trip_uses_tool_plan() -> None:
    call = {"id": "get_weather_1byjy32y4hvq", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"location":"Paris"}'}
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "I will look up the weather in Paris.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "get_weather_1byjy32y4hvq", "content": '{"temp": 20}'},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ]
    }
    messages = build_payload(body, "m", stream=False)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "tool_calls": [call],
        "tool_plan": "I will look up the weather in Paris.",
    }
    assert messages[2] == {
        "role": "tool",
        "tool_call_id": "get_weather_1byjy32y4hvq",
        "content": '{"temp": 20}',
    }
    assert messages[3] == {"role": "assistant", "tool_calls": [call]}


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            "strict": True,
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


@pytest.mark.parametrize(
    ("choice", "names", "cohere_choice"),
    [
        (None, ["get_weather", "get_time"], None),
        ("auto", ["get_weather", "get_time"], None),
        ("none", ["get_weather", "get_time"], "NONE"),
        ("required", ["get_weather", "get_time"], "REQUIRED"),
        ({"type": "function", "function": {"name": "get_time"}}, ["get_time"], "REQUIRED"),
    ],
)
def test_payload_tools_and_tool_choice(choice: Any, names: list[str], cohere_choice: str | None) -> None:
    body: dict[str, Any] = {"messages": [], "tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    payload = build_payload(body, "m", stream=False)
    assert [t["function"]["name"] for t in payload["tools"]] == names
    assert payload.get("tool_choice") == cohere_choice
    assert "strict" not in payload["tools"][0]["function"]
    if names[0] == "get_weather":
        assert payload["tools"][0]["function"]["description"] == "Weather for a city"


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}},
            {"type": "json_object", "json_schema": {"type": "object"}},
        ),
    ],
)
def test_payload_response_format(response_format: dict[str, Any], expected: dict[str, Any] | None) -> None:
    payload = build_payload({"messages": [], "response_format": response_format}, "m", stream=False)
    assert payload.get("response_format") == expected


# --- answers --------------------------------------------------------------------------------------


def test_text_answer() -> None:
    answer = {
        "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
        "message": {
            "role": "assistant",
            "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
        },
        "finish_reason": "COMPLETE",
        "usage": {
            "billed_units": {"input_tokens": 5, "output_tokens": 9},
            "tokens": {"input_tokens": 71, "output_tokens": 9},
            "cached_tokens": 0,
        },
    }
    out = parse_completion(answer, NAME)
    assert out["id"] == "c14c80c3-18eb-4519-9460-6c92edd8cfb4"
    assert out["object"] == "chat.completion"
    assert out["model"] == NAME
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {"prompt_tokens": 71, "completion_tokens": 9, "total_tokens": 80}


def test_tool_call_answer_keeps_tool_plan_as_content() -> None:
    out = parse_completion(fake.tool_answer(), NAME)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "I will look up the weather in Paris.",
        "tool_calls": [
            {
                "id": "get_weather_1byjy32y4hv0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
            }
        ],
    }
    assert out["usage"] == {"prompt_tokens": 912, "completion_tokens": 61, "total_tokens": 973}


@pytest.mark.parametrize(
    ("cohere", "openai"),
    [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls")],
)
def test_finish_reasons(cohere: str, openai: str) -> None:
    assert (
        parse_completion(fake.chat_answer(finish_reason=cohere), NAME)["choices"][0]["finish_reason"]
        == openai
    )


@pytest.mark.parametrize(("reason", "error"), [("ERROR", UpstreamError), ("TIMEOUT", UpstreamTimeout)])
def test_failed_generation_raises(reason: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_completion(fake.chat_answer(finish_reason=reason), NAME)


def test_usage_falls_back_to_billed_units_and_reports_cached_tokens() -> None:
    answer = fake.chat_answer(answer_usage={"billed_units": {"input_tokens": 5, "output_tokens": 9}})
    assert parse_completion(answer, NAME)["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 9,
        "total_tokens": 14,
    }
    answer = fake.chat_answer(answer_usage=fake.usage((50, 26), (793, 61), cached=176))
    assert parse_completion(answer, NAME)["usage"]["prompt_tokens_details"] == {"cached_tokens": 176}


def test_thinking_parts_become_reasoning_content() -> None:
    answer = fake.chat_answer()
    answer["message"]["content"].insert(0, {"type": "thinking", "thinking": "The user greets me."})
    message = parse_completion(answer, NAME)["choices"][0]["message"]
    assert message["reasoning_content"] == "The user greets me."
    assert message["content"] == "Hello! How can I help you today?"


# --- streams --------------------------------------------------------------------------------------


def test_text_stream() -> None:
    chunks = chunks_of(fake.stream_events())
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == NAME for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"]
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " there!"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, "stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 70, "completion_tokens": 3, "total_tokens": 73}


def test_tool_call_stream() -> None:
    chunks = chunks_of(fake.tool_stream_events())
    got = deltas(chunks)
    assert got[0] == {"role": "assistant", "content": ""}
    assert got[1] == {"content": "I will check the weather."}
    assert got[2] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "get_weather_3v76fs3zjrg0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    assert got[3:5] == [
        {"tool_calls": [{"index": 0, "function": {"arguments": '{\n    "'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'location": "Paris"\n}'}}]},
    ]
    assert chunks[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 793,
        "completion_tokens": 61,
        "total_tokens": 854,
        "prompt_tokens_details": {"cached_tokens": 176},
    }


def test_parallel_tool_calls_get_their_own_index() -> None:
    events = fake.tool_stream_events([("get_weather", ['{"location":', '"Paris"}']), ("get_time", ["{}"])])
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas(chunks_of(events)):
        for call in delta.get("tool_calls", []):
            entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.get("id", "")
            entry["name"] += call.get("function", {}).get("name", "")
            entry["arguments"] += call["function"]["arguments"]
    assert calls == {
        0: {"id": "get_weather_3v76fs3zjrg0", "name": "get_weather", "arguments": '{"location":"Paris"}'},
        1: {"id": "get_time_3v76fs3zjrg1", "name": "get_time", "arguments": "{}"},
    }
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}


def test_thinking_deltas_become_reasoning_content() -> None:
    events = fake.stream_events(["Hi"])
    thinking = {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"thinking": "Hmm."}}}}
    events.insert(2, b"event: content-delta\ndata: " + json.dumps(thinking).encode() + b"\n\n")
    assert deltas(chunks_of(events))[1:3] == [{"reasoning_content": "Hmm."}, {"content": "Hi"}]


@pytest.mark.parametrize("cut", [1, 3, -2])
def test_truncated_stream_raises(cut: int) -> None:
    """No message-end (with or without a [DONE]): the answer is incomplete."""
    events = fake.stream_events()[:cut]
    if cut == -2:
        events.append(b"data: [DONE]\n\n")
    with pytest.raises(UpstreamError, match="ended before it was complete"):
        chunks_of(events)


def test_stream_ending_in_error_raises_after_the_text() -> None:
    got = []
    with pytest.raises(UpstreamError):
        for chunk in parse_chunks(iter_sse(fake.stream_events(["Hel"], finish_reason="ERROR")), NAME):
            got.append(chunk)
    assert deltas(got)[-1] == {"content": "Hel"}


def test_stream_without_done_after_message_end_is_complete() -> None:
    chunks = chunks_of(fake.stream_events()[:-1])
    assert chunks[-1]["usage"]["total_tokens"] == 73


# --- errors and wiring ----------------------------------------------------------------------------


def provider() -> Cohere:
    return Cohere(model(), SessionPool(HttpConfig()), HttpConfig())


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("invalid_api_token", UpstreamAuthError),
        ("trial_rate_limit", RateLimited),
        ("rate_limit", RateLimited),
        ("bad_request", UpstreamBadRequest),
        ("invalid_tool_generation", UpstreamBadRequest),
        ("server_error", UpstreamError),
        ("unavailable", UpstreamError),
        ("gateway_timeout", UpstreamTimeout),
    ],
)
def test_errors_by_status(kind: str, error: type[Exception]) -> None:
    status, message = fake.ERRORS[kind]
    got = provider().parse_error(status, json.dumps(fake.error_body(message)).encode(), {})
    assert type(got) is error
    if error is UpstreamBadRequest:
        assert got.message == message
    if error is RateLimited:
        assert got.retry_after is None
        assert "Trial key" in got.message or "per minute" in got.message


def test_rate_limit_with_retry_after() -> None:
    status, message = fake.ERRORS["rate_limit"]
    got = provider().parse_error(status, json.dumps(fake.error_body(message)).encode(), {"retry-after": "12"})
    assert isinstance(got, RateLimited) and got.retry_after == 12


def test_request_wiring() -> None:
    request = provider().build_request({"messages": [{"role": "user", "content": "Hi"}]}, stream=True)
    assert request.url == "https://api.cohere.com/v2/chat"
    assert request.headers["Authorization"] == "Bearer k"
    assert request.headers["Accept"] == "text/event-stream"
    assert json.loads(request.payload)["model"] == "command-a-03-2025"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://api.cohere.com/v2/chat", "app.providers.cohere:Cohere"),
        ("https://api.cohere.ai/compatibility/v1/chat/completions", "app.providers.openai:OpenAICompatible"),
    ],
)
def test_compatibility_api_takes_the_openai_path(url: str, path: str) -> None:
    assert adapter_path(model(url)) == path
