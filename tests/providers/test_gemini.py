"""Unit tests of the pure Gemini translations, from the shapes in provider-formats/04-gemini.md."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from app.config import HttpConfig, ModelConfig
from app.errors import (
    InvalidRequest,
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
)
from app.http import SessionPool
from app.providers.gemini import (
    DUMMY_THOUGHT_SIGNATURE,
    Gemini,
    from_gemini_response,
    gemini_error,
    gemini_stream_to_chunks,
    to_gemini_request,
)
from app.sse import iter_sse
from tests.fakes.gemini import (
    API_KEY,
    blocked_response,
    error_body,
    function_call,
    generate_response,
    sse_event,
    stream_events,
    usage_metadata,
)

MODEL = "gemini/gemini-2.0-flash"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def request(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return to_gemini_request(body)


def chunks_of(events: list[bytes], piece: int = 7) -> list[dict[str, Any]]:
    """Run raw SSE bytes, cut into small pieces, through the real parser and the translator."""
    raw = b"".join(events)
    return list(
        gemini_stream_to_chunks(iter_sse(raw[i : i + piece] for i in range(0, len(raw), piece)), MODEL)
    )


def error_bytes(kind: str, **kwargs: Any) -> bytes:
    return json.dumps(error_body(kind, **kwargs), indent=2).encode()  # type: ignore[arg-type]


# --- requests ---------------------------------------------------------------------------------


def test_system_messages_become_system_instruction_and_roles_map():
    got = to_gemini_request(
        {
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What's the weather in Paris?"},
            ]
        }
    )
    assert got == {
        "systemInstruction": {
            "parts": [{"text": "You are a terse assistant."}, {"text": "Answer in English."}]
        },
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "What's the weather in Paris?"}]},
        ],
    }


def test_consecutive_same_role_turns_are_merged():
    got = to_gemini_request(
        {
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": ""},
                {"role": "user", "content": "three"},
            ]
        }
    )
    assert got["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "user", "parts": [{"text": "three"}]},
    ]


def test_generation_config():
    got = request(
        temperature=0.2,
        top_p=0.95,
        max_tokens=256,
        stop="END",
        n=2,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        response_format={"type": "json_object"},
        user="ignored",
        parallel_tool_calls=True,
    )
    assert got["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.95,
        "maxOutputTokens": 256,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "responseMimeType": "application/json",
    }
    assert set(got) == {"contents", "generationConfig"}


def test_max_completion_tokens_wins_and_stop_list_kept():
    got = request(max_tokens=10, max_completion_tokens=20, stop=["a", "b"], temperature=0)
    assert got["generationConfig"] == {"maxOutputTokens": 20, "stopSequences": ["a", "b"], "temperature": 0}
    assert "generationConfig" not in request()
    assert request(max_tokens=10, max_completion_tokens=None)["generationConfig"] == {"maxOutputTokens": 10}


def test_json_schema_simple_goes_to_response_schema():
    schema = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}}}
    got = request(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert got["generationConfig"] == {"responseMimeType": "application/json", "responseSchema": schema}


def test_json_schema_beyond_openapi_subset_goes_to_response_json_schema():
    schema = {
        "type": "object",
        "properties": {"city": {"type": ["string", "null"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    got = request(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "strict": True, "schema": schema},
        }
    )
    assert got["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}


def test_tools_become_function_declarations():
    strict = {
        "type": "function",
        "function": {
            "name": "lookup",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}},
                "required": ["q"],
                "additionalProperties": False,
            },
        },
    }
    no_args = {
        "type": "function",
        "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
    }
    got = request(tools=[WEATHER_TOOL, strict, no_args])
    assert got["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": WEATHER_TOOL["function"]["parameters"],
                },
                {"name": "lookup", "parametersJsonSchema": strict["function"]["parameters"]},
                {"name": "now"},
            ]
        }
    ]
    assert "toolConfig" not in got


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice(choice, config):
    got = request(tools=[WEATHER_TOOL], tool_choice=choice)
    assert got["toolConfig"] == {"functionCallingConfig": config}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": [{"role": "critic", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": "x"}]}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_unsupported_input_is_a_clear_400(body, param):
    with pytest.raises(InvalidRequest) as info:
        request(**body)
    assert info.value.status == 400
    assert info.value.param == param


def tool_round_trip_messages(result: Any) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "What's the weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                },
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": result},
        {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
    ]


def test_tool_calls_and_results_round_trip():
    got = to_gemini_request(
        {"messages": tool_round_trip_messages('{"temperature": 21, "condition": "sunny"}')}
    )
    assert got["contents"] == [
        {"role": "user", "parts": [{"text": "What's the weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"temperature": 21, "condition": "sunny"},
                    }
                },
                {"functionResponse": {"name": "get_time", "response": {"result": "12:00"}}},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("content", "response"),
    [
        ("[1, 2]", {"result": [1, 2]}),
        ("42", {"result": 42}),
        ("not json", {"result": "not json"}),
        ([{"type": "text", "text": '{"ok": true}'}], {"ok": True}),
    ],
)
def test_tool_results_that_are_not_objects_are_wrapped(content, response):
    got = to_gemini_request({"messages": tool_round_trip_messages(content)})
    assert got["contents"][2]["parts"][0]["functionResponse"]["response"] == response


def test_legacy_function_call_and_result():
    messages = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "function_call": {"name": "now", "arguments": "{}"}},
        {"role": "function", "name": "now", "content": '"12:00"'},
    ]
    assert to_gemini_request({"messages": messages})["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "now", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "now", "response": {"result": "12:00"}}}]},
    ]


def test_tool_result_for_unknown_call_is_a_400():
    messages = [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_zz", "content": "1"}]
    with pytest.raises(InvalidRequest) as info:
        to_gemini_request({"messages": messages})
    assert info.value.param == "messages[1].tool_call_id"


def test_tool_call_arguments_must_be_an_object():
    messages = tool_round_trip_messages("{}")
    messages[1]["tool_calls"][0]["function"]["arguments"] = "[1]"
    with pytest.raises(InvalidRequest) as info:
        to_gemini_request({"messages": messages})
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"


def test_thought_signatures_are_echoed_or_filled_in():
    messages = tool_round_trip_messages("{}")
    signed = {**messages[1]["tool_calls"][0], "extra_content": {"google": {"thought_signature": "CiQB0e2Kb"}}}
    echoed = to_gemini_request({"messages": [messages[0], {**messages[1], "tool_calls": [signed]}]})
    assert echoed["contents"][1]["parts"][0]["thoughtSignature"] == "CiQB0e2Kb"

    plain = to_gemini_request({"messages": messages})
    assert all("thoughtSignature" not in p for p in plain["contents"][1]["parts"])

    filled = to_gemini_request({"messages": messages}, thought_signature_fallback=DUMMY_THOUGHT_SIGNATURE)
    parts = filled["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == DUMMY_THOUGHT_SIGNATURE
    assert "thoughtSignature" not in parts[1]  # only the first call of a step carries one


def test_images_as_data_urls_become_inline_data():
    got = request(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{PNG_B64}", "detail": "low"},
                    },
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                ],
            }
        ]
    )
    assert got["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
    ]


@pytest.mark.parametrize(
    "url", ["https://example.com/cat.png", "data:image/png,rawbytes", "data:;base64,AAAA"]
)
def test_images_other_than_base64_data_urls_are_a_400(url):
    with pytest.raises(InvalidRequest) as info:
        request(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])
    assert info.value.param == "messages[0].content[0].image_url.url"
    assert "data URL" in info.value.message


# --- responses --------------------------------------------------------------------------------


def test_text_response():
    got = from_gemini_response(generate_response(), MODEL)
    assert got["id"] == "chatcmpl-ibRCaOfLGfuQ1PIPqNma8Aw"
    assert got["object"] == "chat.completion"
    assert isinstance(got["created"], int)
    assert got["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
            "finish_reason": "stop",
        }
    ]
    assert got["usage"] == {"prompt_tokens": 10, "completion_tokens": 9, "total_tokens": 19}


def test_function_call_response():
    data = generate_response(
        [function_call("get_weather", {"location": "Paris"}, signature="CiQB0e2Kb...")],
        usage={"promptTokenCount": 52, "candidatesTokenCount": 5, "totalTokenCount": 57},
        model="gemini-2.5-flash",
    )
    choice = from_gemini_response(data, MODEL)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) > 10
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"location":"Paris"}'}
    assert call["extra_content"] == {"google": {"thought_signature": "CiQB0e2Kb..."}}


def test_parallel_function_calls_get_distinct_ids_and_text_is_kept():
    data = generate_response([{"text": "Checking."}, function_call("a"), function_call("b", {"x": 1})])
    message = from_gemini_response(data, MODEL)["choices"][0]["message"]
    assert message["content"] == "Checking."
    assert [c["function"]["arguments"] for c in message["tool_calls"]] == ["{}", '{"x":1}']
    assert len({c["id"] for c in message["tool_calls"]}) == 2


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("OTHER", "stop"),
        ("SOMETHING_NEW", "stop"),
    ],
)
def test_finish_reasons(reason, expected):
    got = from_gemini_response(generate_response("x", finish_reason=reason), MODEL)
    assert got["choices"][0]["finish_reason"] == expected


def test_thoughts_go_to_reasoning_content_and_usage():
    data = generate_response(
        [{"text": "Let me think.", "thought": True}, {"text": "42"}],
        usage={
            "promptTokenCount": 10,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 120,
            "totalTokenCount": 132,
            "cachedContentTokenCount": 4,
        },
        model="gemini-2.5-flash",
    )
    got = from_gemini_response(data, MODEL)
    assert got["choices"][0]["message"] == {
        "role": "assistant",
        "content": "42",
        "reasoning_content": "Let me think.",
    }
    assert got["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 122,
        "total_tokens": 132,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 120},
    }


def test_max_tokens_without_parts_is_an_empty_answer():
    data = generate_response("x", finish_reason="MAX_TOKENS")
    del data["candidates"][0]["content"]["parts"]
    choice = from_gemini_response(data, MODEL)["choices"][0]
    assert choice == {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "length"}


def test_several_candidates_become_several_choices():
    got = from_gemini_response(generate_response("x", candidates=2), MODEL)
    assert [c["index"] for c in got["choices"]] == [0, 1]


def test_blocked_prompt_is_a_400_not_an_empty_answer():
    with pytest.raises(InvalidRequest) as info:
        from_gemini_response(blocked_response("PROHIBITED_CONTENT"), MODEL)
    assert info.value.status == 400
    assert info.value.code == "content_filter"
    assert "PROHIBITED_CONTENT" in info.value.message


def test_answer_without_candidates_is_an_upstream_error():
    with pytest.raises(UpstreamError):
        from_gemini_response({"usageMetadata": usage_metadata()}, MODEL)


# --- streams ----------------------------------------------------------------------------------


def test_stream_text_deltas_then_usage_chunk():
    events = stream_events(["Sure, here", " you go:", "\nGerman: Kartoffel\n"])
    assert events[0].endswith(b"}\r\n\r\n")  # Google's CRLF framing, parsed by the shared SSE reader
    chunks = chunks_of(events)
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [
        {"role": "assistant", "content": "Sure, here"},
        {"content": " you go:"},
        {"content": "\nGerman: Kartoffel\n"},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:3]] == [None, None, "stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 24, "total_tokens": 34}
    assert len(chunks) == 4
    assert {c["id"] for c in chunks} == {"chatcmpl-ibRCaOfLGfuQ1PIPqNma8Aw"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_stream_function_call():
    events = stream_events([[function_call("get_weather", {"location": "Paris"})]])
    chunks = chunks_of(events)
    delta = chunks[0]["choices"][0]["delta"]
    assert delta["role"] == "assistant"
    (call,) = delta["tool_calls"]
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"location":"Paris"}'}
    assert chunks[0]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_thoughts_and_empty_parts():
    events = stream_events(
        [[{"text": "Hmm.", "thought": True}], [{"text": ""}], [{"text": "42", "thoughtSignature": "sig"}]],
        thoughts_tokens=30,
    )
    chunks = chunks_of(events)
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [
        {"role": "assistant", "reasoning_content": "Hmm."},
        {"content": "42"},
    ]
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 30}


def test_stream_that_ends_without_finish_reason_is_truncated():
    stream = gemini_stream_to_chunks(iter_sse(stream_events(["a", "b"], finish_reason=None)), MODEL)
    assert next(stream)["choices"][0]["delta"]["content"] == "a"
    assert next(stream)["choices"][0]["delta"]["content"] == "b"
    with pytest.raises(UpstreamError, match="ended before it was complete"):
        next(stream)


def test_empty_stream_is_truncated():
    with pytest.raises(UpstreamError):
        list(gemini_stream_to_chunks(iter([]), MODEL))


def test_stream_with_blocked_prompt_is_a_400():
    with pytest.raises(InvalidRequest) as info:
        chunks_of([sse_event(blocked_response())])
    assert info.value.code == "content_filter"


def test_stream_error_event_maps_like_an_http_error():
    events = [*stream_events(["a"], finish_reason=None), sse_event(error_body("unavailable"))]
    with pytest.raises(UpstreamError, match="overloaded"):
        chunks_of(events)
    with pytest.raises(RateLimited):
        chunks_of([sse_event(error_body("rate_limit"))])


# --- errors -----------------------------------------------------------------------------------


def test_bad_key_400_is_an_auth_error():
    error = gemini_error(400, error_bytes("bad_key"), {}, MODEL)
    assert isinstance(error, UpstreamAuthError)
    assert error.status == 502


def test_permission_denied_is_an_auth_error():
    assert isinstance(gemini_error(403, error_bytes("missing_key"), {}, MODEL), UpstreamAuthError)


@pytest.mark.parametrize(("delay", "seconds"), [("14s", 14.0), ("1.5s", 1.5), ("37s", 37.0)])
def test_rate_limit_reads_retry_info(delay, seconds):
    error = gemini_error(429, error_bytes("rate_limit", retry_delay=delay), {}, MODEL)
    assert isinstance(error, RateLimited)
    assert error.retry_after == seconds


def test_rate_limit_without_retry_info_reads_the_message():
    error = gemini_error(429, error_bytes("rate_limit", retry_delay=None), {}, MODEL)
    assert error.retry_after == pytest.approx(14.925851614)


def test_daily_quota_waits_until_pacific_midnight():
    now = datetime(2026, 3, 2, 22, 0, tzinfo=ZoneInfo("America/Los_Angeles")).timestamp()
    error = gemini_error(429, error_bytes("rate_limit", daily=True), {}, MODEL, now=now)
    assert error.retry_after == pytest.approx(2 * 3600)


def test_compat_style_list_wrapped_error():
    body = orjson.dumps([error_body("rate_limit", retry_delay="3s")])
    assert gemini_error(429, body, {}, MODEL).retry_after == 3.0


@pytest.mark.parametrize(("kind", "status"), [("internal", 500), ("unavailable", 503)])
def test_server_errors_are_upstream_errors(kind, status):
    error = gemini_error(status, error_bytes(kind), {}, MODEL)
    assert type(error) is UpstreamError
    assert error.retryable


def test_unknown_model_404_is_a_bad_request():
    error = gemini_error(404, error_bytes("not_found", model="gemini-9"), {}, MODEL)
    assert isinstance(error, UpstreamBadRequest)
    assert error.status == 400
    assert "gemini-9 is not found" in error.message


def test_unsupported_location_lets_another_model_serve():
    body = orjson.dumps(
        {
            "error": {
                "code": 400,
                "message": "User location is not supported for the API use.",
                "status": "FAILED_PRECONDITION",
            }
        }
    )
    error = gemini_error(400, body, {}, MODEL)
    assert type(error) is UpstreamError


def test_non_json_error_body():
    error = gemini_error(502, b"<html>Bad Gateway</html>", {}, MODEL)
    assert type(error) is UpstreamError
    assert "502" in error.message


# --- the adapter binding ----------------------------------------------------------------------


def make_adapter(upstream: str = "gemini-2.0-flash") -> Gemini:
    model = ModelConfig(
        name=f"gemini/{upstream}",
        provider="gemini",
        url="https://generativelanguage.googleapis.com/v1beta/models/",
        upstream_model=upstream,
        token=API_KEY,
    )
    return Gemini(model, SessionPool(HttpConfig()), HttpConfig())


def test_adapter_urls_and_key_header():
    adapter = make_adapter()
    plain = adapter.build_request({"messages": [{"role": "user", "content": "Hi"}]}, stream=False)
    streamed = adapter.build_request({"messages": [{"role": "user", "content": "Hi"}]}, stream=True)
    base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash"
    assert plain.url == f"{base}:generateContent"
    assert streamed.url == f"{base}:streamGenerateContent?alt=sse"
    assert plain.headers["x-goog-api-key"] == API_KEY
    assert streamed.headers["Accept"] == "text/event-stream"
    assert API_KEY not in plain.url + streamed.url
    assert orjson.loads(plain.payload) == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_adapter_fills_thought_signatures_only_for_gemini_3():
    body = {"messages": tool_round_trip_messages("{}")}
    for upstream, expected in (("gemini-2.5-flash", False), ("models/gemini-3-pro-preview", True)):
        payload = orjson.loads(make_adapter(upstream).build_request(body, stream=False).payload)
        assert ("thoughtSignature" in payload["contents"][1]["parts"][0]) is expected
