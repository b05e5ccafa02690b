"""Anthropic Messages translation, pure: request -> chat request, answer and stream -> Messages."""

from __future__ import annotations

from typing import Any

import pytest

from app.api import anthropic
from app.api.blocks import fold_stream
from app.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from app.events import HEARTBEAT, StreamFailed
from app.providers.shape import Answer
from app.redact import Redactor
from tests.fakes.openai import chat_completion, tool_call
from tests.fronts.chunks import reasoning_chunk, sse_events, upstream_chunks

SECRET = "sk-upstream-secret-123"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def request(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
    } | extra


# --- request -------------------------------------------------------------------------------------
def test_system_blocks_and_cache_control_become_one_system_message():
    chat = anthropic.to_chat(
        request(
            system=[
                {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be brief."},
            ],
            metadata={"user_id": "u-1"},
            top_k=5,
            some_future_field={"x": 1},
        )
    )
    assert chat == {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "You are Claude Code.\nBe brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 1024,
    }


def test_sampling_fields_and_stream():
    chat = anthropic.to_chat(request(temperature=0.2, top_p=0.9, stop_sequences=["END"], stream=True))
    assert chat["temperature"] == 0.2 and chat["top_p"] == 0.9
    assert chat["stop"] == ["END"]
    assert chat["stream"] is True


def test_a_tool_round_trip_conversation():
    body = request(
        system="sys",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should call the tool", "signature": "sig"},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {"role": "system", "content": "Reminder: be short"},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C", "cache_control": {}},
                    {"type": "text", "text": "And?"},
                ],
            },
        ],
        tools=[
            {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
        tool_choice={"type": "auto"},
    )
    chat = anthropic.to_chat(body)
    assert chat["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "system", "content": "Reminder: be short"},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "user", "content": "And?"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA, "description": "Weather"},
        }
    ]
    assert chat["tool_choice"] == "auto"


def test_tool_results_as_blocks_with_errors_and_images():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}}
    content = [
        {
            "type": "tool_result",
            "tool_use_id": "a",
            "content": [{"type": "text", "text": "boom"}],
            "is_error": True,
        },
        {"type": "tool_result", "tool_use_id": "b", "content": [{"type": "text", "text": "shot"}, image]},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/x.png"}},
    ]
    messages = anthropic.to_chat(request(messages=[{"role": "user", "content": content}]))["messages"]
    assert messages == [
        {"role": "tool", "tool_call_id": "a", "content": "Error: boom"},
        {"role": "tool", "tool_call_id": "b", "content": "shot"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            {
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": False,
            },
        ),
    ],
)
def test_tool_choice(choice, expected):
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    chat = anthropic.to_chat(request(tools=tools, tool_choice=choice))
    assert {k: chat[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 10000}, "medium"),
        ({"type": "enabled", "budget_tokens": 31999}, "high"),
        ({"type": "adaptive"}, None),
        ({"type": "disabled"}, None),
    ],
)
def test_thinking_budget_is_a_reasoning_effort(thinking, effort):
    assert anthropic.to_chat(request(thinking=thinking)).get("reasoning_effort") == effort


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "thinking", "thinking": "x"}]}],
            },
            "messages",
        ),
        ({"model": "m", "messages": [{"role": "system", "content": "only rules"}]}, "messages"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages.0"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.0"),
        ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}, "stream"),
    ],
)
def test_bad_requests_are_invalid_request_errors(body, param):
    with pytest.raises(InvalidRequest) as caught:
        anthropic.to_chat(body)
    assert caught.value.param == param
    status, shaped = anthropic.error_body(caught.value, str)
    assert status == 400 and shaped["error"]["type"] == "invalid_request_error"


def test_count_tokens_estimate_grows_with_the_request():
    small = anthropic.estimate_input_tokens(anthropic.to_chat(request()))
    tools = [{"name": "get_weather", "description": "d" * 400, "input_schema": WEATHER_SCHEMA}]
    big = anthropic.estimate_input_tokens(anthropic.to_chat(request(system="s" * 4000, tools=tools)))
    assert 1 <= small < 10
    assert big >= 1100


# --- answer --------------------------------------------------------------------------------------
def test_text_answer():
    completion = chat_completion("groq/llama", "Hello there", prompt_tokens=12, completion_tokens=3)
    message = anthropic.message_from(Answer.from_completion(completion), "msg_1")
    assert message == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "groq/llama",
        "content": [{"type": "text", "text": "Hello there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 3,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }


def test_tool_use_and_thinking_answer():
    completion = chat_completion(
        "m", tool_calls=[tool_call("get_weather", {"city": "Paris"}, id="call_9")], finish_reason="tool_calls"
    )
    completion["choices"][0]["message"]["reasoning_content"] = "Need the weather."
    message = anthropic.message_from(Answer.from_completion(completion), "msg_1")
    assert message["content"] == [
        {"type": "thinking", "thinking": "Need the weather.", "signature": ""},
        {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), (None, "end_turn")],
)
def test_stop_reasons(finish, reason):
    assert anthropic.stop_reason(finish) == reason


def test_missing_usage_is_estimated():
    completion = chat_completion("m", "x" * 40)
    del completion["usage"]
    usage = anthropic.message_from(Answer.from_completion(completion), "msg_1", input_estimate=7)["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (7, 10)


# --- stream --------------------------------------------------------------------------------------
def stream(events: list[Any]) -> list[tuple[str, Any]]:
    folded = fold_stream(events, "served/model")
    raw = b"".join(anthropic.message_events(folded, "msg_1", "served/model", 9, Redactor([SECRET])))
    return sse_events(raw)


def test_text_stream_event_sequence():
    chunks = upstream_chunks(
        model="served/model", content=["Hel", "lo"], prompt_tokens=11, completion_tokens=2
    )
    events = stream([HEARTBEAT, *chunks[:2], HEARTBEAT, *chunks[2:]])
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "ping",
        "content_block_start",
        "content_block_delta",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["id"] == "msg_1" and start["model"] == "served/model" and start["content"] == []
    assert start["usage"] == {"input_tokens": 9, "output_tokens": 0} and start["stop_reason"] is None
    assert events[3][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    texts = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert texts == ["Hel", "lo"]
    final = events[-2][1]
    assert final["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert final["usage"]["input_tokens"] == 11 and final["usage"]["output_tokens"] == 2


def test_thinking_then_tool_use_stream():
    calls = [tool_call("get_weather", {"city": "Paris"}, id="call_1"), tool_call("get_time", {}, id="call_2")]
    chunks = upstream_chunks(tool_calls=calls)
    events = stream([reasoning_chunk("Think"), reasoning_chunk("ing"), *chunks])
    starts = [(d["index"], d["content_block"]) for n, d in events if n == "content_block_start"]
    assert starts == [
        (0, {"type": "thinking", "thinking": "", "signature": ""}),
        (1, {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}),
        (2, {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}),
    ]
    deltas: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_delta":
            delta = data["delta"]
            piece = delta.get("thinking") if delta["type"] == "thinking_delta" else delta["partial_json"]
            deltas[data["index"]] = deltas.get(data["index"], "") + piece
    assert deltas == {0: "Thinking", 1: '{"city": "Paris"}', 2: "{}"}
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert stops == [0, 1, 2]
    # every block is stopped before the next starts
    order = [(n, d["index"]) for n, d in events if n in ("content_block_start", "content_block_stop")]
    assert order == [(kind, i) for i in range(3) for kind in ("content_block_start", "content_block_stop")]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_failure_after_the_start_is_an_error_event_and_the_end():
    chunks = upstream_chunks(content=["Hel", "lo"])
    events = stream([*chunks[:2], StreamFailed(UpstreamError("upstream went away")), *chunks[2:]])
    assert [n for n, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert events[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "upstream went away"}}


def test_failure_before_content_after_heartbeats():
    events = stream([HEARTBEAT, StreamFailed(ServiceUnavailable("every model is resting"))])
    assert [n for n, _ in events] == ["message_start", "ping", "ping", "error"]
    assert events[-1][1]["error"]["type"] == "overloaded_error"


# --- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (AuthenticationFailed("no"), 401, "authentication_error"),
        (ModelNotFound("no"), 404, "not_found_error"),
        (RateLimited("slow", retry_after=3), 429, "rate_limit_error"),
        (UpstreamError("bad"), 502, "api_error"),
        (UpstreamTimeout("slow"), 504, "api_error"),
        (ServiceUnavailable("all broken"), 529, "overloaded_error"),
        (InvalidRequest("bad", status=403), 403, "permission_error"),
    ],
)
def test_error_shapes(error, status, kind):
    assert anthropic.error_body(error, str) == (
        status,
        {"type": "error", "error": {"type": kind, "message": error.message}},
    )
