"""OpenAI Responses translation, pure: request -> chat request, answer and stream -> Responses."""

from __future__ import annotations

from typing import Any

import pytest

from app.api import responses
from app.api.blocks import fold_stream
from app.errors import InvalidRequest, UpstreamError
from app.events import HEARTBEAT, StreamFailed
from app.providers.shape import Answer
from app.redact import Redactor
from tests.fakes.openai import chat_completion, tool_call
from tests.fronts.chunks import reasoning_chunk, sse_events, upstream_chunks

SECRET = "sk-upstream-secret-123"
PARAMS = {"type": "object", "properties": {"cmd": {"type": "string"}}}


def request(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-5.1-codex", "input": "Hi"} | extra


# --- request -------------------------------------------------------------------------------------
def test_string_input_and_instructions():
    translated = responses.to_chat(request(instructions="Be brief.", store=True, include=["x"], future=1))
    assert translated.chat == {
        "model": "gpt-5.1-codex",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }
    assert translated.ignored_tools == []


def test_input_items_of_a_codex_turn():
    items = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Rules"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "List files"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running ls."}]},
        {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": '{"cmd":"ls"}'},
        {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
        {
            "type": "custom_tool_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "ok"}],
        },
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "And this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "low"},
            ],
        },
    ]
    messages = responses.to_chat(request(input=items)).chat["messages"]
    assert messages == [
        {"role": "system", "content": "Rules"},
        {"role": "user", "content": "List files"},
        {
            "role": "assistant",
            "content": "Running ls.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "shell", "arguments": '{"cmd":"ls"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "apply_patch", "arguments": '{"input":"*** Begin Patch"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "call_2", "content": "ok"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA", "detail": "low"}},
            ],
        },
    ]


def test_tools_function_namespace_custom_and_builtins():
    tools = [
        {"type": "function", "name": "shell", "description": "Run", "parameters": PARAMS, "strict": False},
        {
            "type": "namespace",
            "name": "mcp",
            "tools": [{"type": "function", "name": "search", "parameters": PARAMS}],
        },
        {
            "type": "custom",
            "name": "apply_patch",
            "description": "Patch",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: PATCH"},
        },
        {"type": "web_search"},
        {"type": "local_shell"},
    ]
    translated = responses.to_chat(request(tools=tools, tool_choice="required", parallel_tool_calls=False))
    chat = translated.chat
    assert [t["function"]["name"] for t in chat["tools"]] == ["shell", "search", "apply_patch"]
    assert chat["tools"][0] == {
        "type": "function",
        "function": {"name": "shell", "description": "Run", "parameters": PARAMS},
    }
    custom = chat["tools"][2]["function"]["parameters"]
    assert custom["required"] == ["input"] and custom["properties"]["input"]["type"] == "string"
    assert custom["properties"]["input"]["description"].endswith("lark grammar:\nstart: PATCH")
    assert translated.custom_tools == {"apply_patch"}
    assert translated.ignored_tools == ["web_search", "local_shell"]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False


def test_only_builtin_tools_send_no_tools():
    translated = responses.to_chat(request(tools=[{"type": "web_search"}], tool_choice="auto"))
    assert "tools" not in translated.chat and "tool_choice" not in translated.chat
    assert translated.ignored_tools == ["web_search"]


def test_named_tool_choice():
    tools = [{"type": "function", "name": "shell", "parameters": PARAMS}]
    chat = responses.to_chat(request(tools=tools, tool_choice={"type": "function", "name": "shell"})).chat
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "shell"}}


def test_options():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = responses.to_chat(
        request(
            max_output_tokens=300,
            temperature=0.3,
            top_p=0.5,
            reasoning={"effort": "minimal", "summary": "auto"},
            text={"format": {"type": "json_schema", "name": "point", "schema": schema, "strict": True}},
            stream=True,
        )
    ).chat
    assert chat["max_tokens"] == 300 and chat["temperature"] == 0.3 and chat["top_p"] == 0.5
    assert chat["reasoning_effort"] == "low"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "point", "schema": schema, "strict": True},
    }
    assert chat["stream"] is True
    json_object = responses.to_chat(request(text={"format": {"type": "json_object"}})).chat
    assert json_object["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": [{"type": "reasoning", "summary": []}]}, "input"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": "x", "max_output_tokens": -1}, "max_output_tokens"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.schema"),
    ],
)
def test_bad_requests(body, param):
    with pytest.raises(InvalidRequest) as caught:
        responses.to_chat(body)
    assert caught.value.param == param and caught.value.status == 400


def test_previous_response_id_says_what_to_do():
    with pytest.raises(InvalidRequest, match="whole conversation"):
        responses.to_chat(request(previous_response_id="resp_abc"))


# --- answer --------------------------------------------------------------------------------------
def test_text_answer():
    translated = responses.to_chat(request(instructions="Be brief.", max_output_tokens=50))
    completion = chat_completion("groq/llama", "Hello there", prompt_tokens=12, completion_tokens=3)
    completion["choices"][0]["message"]["reasoning_content"] = "Greeting."
    body = responses.response_from(translated, Answer.from_completion(completion), "resp_1", 1700000000)
    assert body["id"] == "resp_1" and body["object"] == "response" and body["status"] == "completed"
    assert body["model"] == "groq/llama" and body["created_at"] == 1700000000
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == [
        {"type": "summary_text", "text": "Greeting."}
    ]
    assert reasoning["id"].startswith("rs_") and message["id"].startswith("msg_")
    assert message["content"] == [
        {"type": "output_text", "text": "Hello there", "annotations": [], "logprobs": []}
    ]
    assert message["status"] == "completed" and message["role"] == "assistant"
    assert body["output_text"] == "Hello there"
    assert body["usage"] == {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    assert body["instructions"] == "Be brief." and body["max_output_tokens"] == 50
    assert body["error"] is None and body["incomplete_details"] is None


def test_function_and_custom_tool_calls_answer():
    tools = [
        {"type": "function", "name": "shell", "parameters": PARAMS},
        {"type": "custom", "name": "apply_patch"},
    ]
    translated = responses.to_chat(request(tools=tools))
    calls = [
        tool_call("shell", {"cmd": "ls"}, id="call_1"),
        tool_call("apply_patch", {"input": "*** Begin Patch"}, id="call_2"),
    ]
    body = responses.response_from(
        translated, Answer.from_completion(chat_completion("m", tool_calls=calls)), "r", 1
    )
    function, custom = body["output"]
    assert function == {
        "type": "function_call",
        "id": function["id"],
        "call_id": "call_1",
        "name": "shell",
        "arguments": '{"cmd": "ls"}',
        "status": "completed",
    }
    assert function["id"].startswith("fc_")
    assert custom["type"] == "custom_tool_call" and custom["input"] == "*** Begin Patch"
    assert custom["call_id"] == "call_2" and custom["name"] == "apply_patch"
    assert body["output_text"] == ""


def test_length_is_incomplete():
    completion = chat_completion("m", "cut", finish_reason="length")
    body = responses.response_from(responses.to_chat(request()), Answer.from_completion(completion), "r", 1)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}


# --- stream --------------------------------------------------------------------------------------
def stream(events: list[Any], body: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    translated = responses.to_chat(body or request())
    folded = fold_stream(events, "served/model")
    rendered = responses.response_events(
        folded, translated, "resp_1", 1, "served/model", 9, Redactor([SECRET])
    )
    return sse_events(b"".join(rendered))


def test_text_stream_event_sequence():
    chunks = upstream_chunks(
        model="served/model", content=["Hel", "lo"], prompt_tokens=11, completion_tokens=2
    )
    events = stream([HEARTBEAT, reasoning_chunk("Hm"), *chunks[:2], HEARTBEAT, *chunks[2:]])
    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(data["type"] == name for name, data in events)
    assert events[0][1]["response"]["status"] == "in_progress" and events[0][1]["response"]["output"] == []
    deltas = [d["delta"] for n, d in events if n == "response.output_text.delta"]
    assert deltas == ["Hel", "lo"]
    message = events[14][1]["item"]
    assert message["content"][0]["text"] == "Hello" and message["status"] == "completed"
    assert events[8][1]["item"]["id"] == message["id"] and events[10][1]["item_id"] == message["id"]
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed" and completed["output_text"] == "Hello"
    assert [item["type"] for item in completed["output"]] == ["reasoning", "message"]
    assert completed["output"][1] == message
    assert completed["usage"]["input_tokens"] == 11 and completed["usage"]["total_tokens"] == 13


def test_function_call_stream():
    tools = [
        {"type": "function", "name": "shell", "parameters": PARAMS},
        {"type": "custom", "name": "apply_patch"},
    ]
    calls = [
        tool_call("shell", {"cmd": "ls -la"}, id="call_1"),
        tool_call("apply_patch", {"input": "P"}, id="c2"),
    ]
    events = stream(upstream_chunks(tool_calls=calls), request(tools=tools))
    names = [name for name, _ in events]
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    added = events[2][1]["item"]
    assert added["type"] == "function_call" and added["arguments"] == "" and added["status"] == "in_progress"
    pieces = [d["delta"] for n, d in events if n == "response.function_call_arguments.delta"]
    assert "".join(pieces) == '{"cmd": "ls -la"}' and len(pieces) > 1
    done = next(d for n, d in events if n == "response.function_call_arguments.done")
    assert done["arguments"] == '{"cmd": "ls -la"}' and done["item_id"] == added["id"]
    items = [d["item"] for n, d in events if n == "response.output_item.done"]
    assert items[0]["type"] == "function_call" and items[0]["arguments"] == '{"cmd": "ls -la"}'
    assert items[1]["type"] == "custom_tool_call" and items[1]["input"] == "P"
    assert "response.custom_tool_call_input.done" in names
    assert names[-1] == "response.completed"


def test_failure_is_response_failed_never_completed():
    chunks = upstream_chunks(content=["Hel", "lo"])
    events = stream(
        [*chunks[:2], StreamFailed(UpstreamError(f"upstream went away: Bearer {SECRET}")), *chunks[2:]]
    )
    names = [name for name, _ in events]
    assert names[-1] == "response.failed" and "response.completed" not in names
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "upstream_error", "message": "upstream went away: Bearer [redacted]"}
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
