"""Unit tests of the pure GigaChat translations, from the shapes recorded in 07-gigachat.md."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from gigachat.exceptions import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    ResponseError,
    ServerError,
    UnprocessableEntityError,
)
from gigachat.models.chat import Chat, ChatCompletion, ChatCompletionChunk

from app.errors import (
    InvalidRequest,
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
)
from app.providers.gigachat import (
    build_chat,
    build_messages,
    function_call_for,
    map_error,
    map_usage,
    parse_completion,
    sdk_credentials,
    stream_chunk,
    translate_stream,
)

STATE_ID = "77d3fb14-457a-46ba-937e-8d856156d003"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather_forecast",
        "description": "Возвращает температуру на заданный период",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "Город"},
                "num_days": {"type": "integer", "minimum": 0},
                "unit": {"type": ["string", "null"], "enum": ["C", "F", None]},
            },
            "required": ["location"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}

# --- recorded shapes (07-gigachat.md) ---------------------------------------------------------
ANSWER = {
    "choices": [{"message": {"content": "Hello.", "role": "assistant"}, "index": 0, "finish_reason": "stop"}],
    "created": 1765875463,
    "model": "GigaChat:2.0.28.2",
    "object": "chat.completion",
    "usage": {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20, "precached_prompt_tokens": 2},
}
FUNCTION_ANSWER = {
    "choices": [
        {
            "message": {
                "content": "",
                "role": "assistant",
                "function_call": {
                    "name": "weather_forecast",
                    "arguments": {"location": "Москва", "num_days": 0},
                },
                "functions_state_id": STATE_ID,
            },
            "index": 0,
            "finish_reason": "function_call",
        }
    ],
    "created": 1706016586,
    "model": "GigaChat-2:2.0.28.2",
    "object": "chat.completion",
    "usage": {
        "prompt_tokens": 138,
        "completion_tokens": 21,
        "total_tokens": 159,
        "precached_prompt_tokens": 0,
    },
}
STREAM = [
    {
        "choices": [{"delta": {"content": "GigaChat", "role": "assistant"}, "index": 0}],
        "created": 1683034756,
        "model": "GigaChat:2.0.28.2",
        "object": "chat.completion",
    },
    {
        "choices": [{"delta": {"content": " спешит"}, "index": 0}],
        "created": 1683034756,
        "model": "GigaChat:2.0.28.2",
        "object": "chat.completion",
    },
    {
        "choices": [{"delta": {"content": ""}, "index": 0, "finish_reason": "stop"}],
        "created": 1683034756,
        "model": "GigaChat:2.0.28.2",
        "object": "chat.completion",
        "usage": {
            "prompt_tokens": 18,
            "completion_tokens": 6,
            "total_tokens": 24,
            "precached_prompt_tokens": 0,
        },
    },
]


def sdk_json(chat: dict) -> dict:
    """What the SDK puts on the wire for a payload (its own serialisation, additional_fields merged)."""
    from gigachat.api.chat import _build_request_json

    return _build_request_json(Chat.model_validate(chat), exclude_stream=True)


# --- credentials ---------------------------------------------------------------------------------


def test_credentials_pair_is_base64_encoded_and_key_kept():
    assert sdk_credentials("cid:secret") == base64.b64encode(b"cid:secret").decode()
    key = base64.b64encode(b"cid:secret").decode()
    assert sdk_credentials(key) == key
    assert sdk_credentials(f"Basic {key}") == key


# --- request ------------------------------------------------------------------------------------


def test_simple_request_and_sampling_parameters():
    chat = build_chat(
        {
            "model": "public/name",
            "messages": [
                {"role": "system", "content": "Ты — лаконичный помощник."},
                {"role": "user", "content": "Say 'Hello' and nothing else"},
            ],
            "temperature": 0.7,
            "top_p": 0.9,
            "max_tokens": 512,
            "repetition_penalty": 1.0,
            "stop": ["\n"],
            "seed": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "GigaChat-2",
    )
    assert sdk_json(chat) == {
        "model": "GigaChat-2",
        "messages": [
            {"role": "system", "content": "Ты — лаконичный помощник."},
            {"role": "user", "content": "Say 'Hello' and nothing else"},
        ],
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 512,
        "repetition_penalty": 1.0,
    }


def test_zero_temperature_max_completion_tokens_and_effort():
    chat = build_chat(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0,
            "max_completion_tokens": 7,
            "max_tokens": 99,
            "reasoning_effort": "high",
            "n": 2,
        },
        "GigaChat-2-Max",
    )
    assert 0 < chat["temperature"] < 1e-3
    assert chat["max_tokens"] == 7
    assert chat["reasoning_effort"] == "high"
    assert chat["n"] == 2
    assert "reasoning_effort" not in build_chat(
        {"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "minimal"}, "G"
    )


@pytest.mark.parametrize(
    "field,value", [("temperature", "hot"), ("max_tokens", 0), ("max_tokens", 1.5), ("top_p", True)]
)
def test_bad_numbers_are_invalid_requests(field, value):
    with pytest.raises(InvalidRequest) as info:
        build_chat({"messages": [{"role": "user", "content": "x"}], field: value}, "G")
    assert info.value.param == field


def test_system_messages_first_merged_later_ones_become_user():
    messages = build_messages(
        [
            {"role": "system", "content": "A"},
            {"role": "developer", "content": [{"type": "text", "text": "B"}]},
            {"role": "user", "content": [{"type": "text", "text": "q1 "}, {"type": "text", "text": "more"}]},
            {"role": "assistant", "content": "a1"},
            {"role": "system", "content": "late"},
            {"role": "user", "content": "q2", "name": "bob"},
        ]
    )
    assert messages == [
        {"role": "system", "content": "A\n\nB"},
        {"role": "user", "content": "q1 more"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "late"},
        {"role": "user", "content": "q2"},
    ]


def test_image_parts_are_refused():
    with pytest.raises(InvalidRequest, match="image_url"):
        build_messages(
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
                }
            ]
        )


def test_unknown_role_is_refused():
    with pytest.raises(InvalidRequest):
        build_messages([{"role": "critic", "content": "x"}])


def test_tools_become_functions_with_the_schema_verbatim():
    chat = build_chat(
        {"messages": [{"role": "user", "content": "Какая погода в Москве?"}], "tools": [WEATHER]}, "G"
    )
    wire = sdk_json(chat)
    assert wire["function_call"] == "auto"
    assert wire["functions"] == [
        {
            "name": "weather_forecast",
            "description": "Возвращает температуру на заданный период",
            "parameters": WEATHER["function"]["parameters"],  # minimum, type list, null enum all kept
        }
    ]


def test_tool_without_parameters_gets_an_empty_object_schema():
    chat = build_chat(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "now"}}],
        },
        "G",
    )
    assert sdk_json(chat)["functions"] == [
        {"name": "now", "parameters": {"type": "object", "properties": {}}}
    ]


def test_legacy_functions_are_accepted():
    chat = build_chat(
        {
            "messages": [{"role": "user", "content": "x"}],
            "functions": [WEATHER["function"]],
            "function_call": {"name": "weather_forecast"},
        },
        "G",
    )
    assert sdk_json(chat)["function_call"] == {"name": "weather_forecast"}


def test_tool_choice_mapping():
    one = [{"name": "f"}]
    two = [{"name": "f"}, {"name": "g"}]
    assert function_call_for(None, two) == "auto"
    assert function_call_for("auto", two) == "auto"
    assert function_call_for("none", two) == "none"
    assert function_call_for("required", one) == {"name": "f"}
    assert function_call_for("required", two) == "auto"
    assert function_call_for({"type": "function", "function": {"name": "g"}}, two) == {"name": "g"}
    with pytest.raises(InvalidRequest):
        function_call_for({"type": "function", "function": {"name": "zzz"}}, two)


def test_tool_choice_without_tools_sends_no_function_call():
    chat = build_chat({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none"}, "G")
    assert "function_call" not in chat and "additional_fields" not in chat


def test_tool_round_trip_history():
    messages = build_messages(
        [
            {"role": "user", "content": "Какая погода в Москве?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": STATE_ID,
                        "type": "function",
                        "function": {"name": "weather_forecast", "arguments": '{"location": "Москва"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": STATE_ID, "content": '{"temperature": 27}'},
        ]
    )
    assert messages == [
        {"role": "user", "content": "Какая погода в Москве?"},
        {
            "role": "assistant",
            "content": "",
            "function_call": {"name": "weather_forecast", "arguments": {"location": "Москва"}},
            "functions_state_id": STATE_ID,
        },
        {"role": "function", "name": "weather_forecast", "content": '{"temperature": 27}'},
    ]
    # and the SDK model accepts it unchanged
    assert sdk_json({"model": "G", "messages": messages})["messages"] == messages


def test_foreign_call_ids_are_not_sent_as_state_ids_and_results_get_wrapped():
    messages = build_messages(
        [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "call_abc", "type": "function", "function": {"name": "f", "arguments": ""}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": "27 degrees"},
        ]
    )
    assert "functions_state_id" not in messages[1]
    assert messages[1]["function_call"] == {"name": "f", "arguments": {}}
    assert json.loads(messages[2]["content"]) == {"result": "27 degrees"}
    assert json.loads(
        build_messages([{"role": "function", "name": "f", "content": "[1, 2]"}])[0]["content"]
    ) == {"result": [1, 2]}


def test_parallel_tool_calls_become_call_result_pairs():
    messages = build_messages(
        [
            {"role": "user", "content": "weather in A and B"},
            {
                "role": "assistant",
                "content": "checking",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city": "A"}'}},
                    {"id": "c2", "type": "function", "function": {"name": "w", "arguments": '{"city": "B"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"t": 1}'},
            {"role": "tool", "tool_call_id": "c2", "content": '{"t": 2}'},
        ]
    )
    assert [(m["role"], m.get("function_call", {}).get("arguments")) for m in messages] == [
        ("user", None),
        ("assistant", {"city": "A"}),
        ("function", None),
        ("assistant", {"city": "B"}),
        ("function", None),
    ]
    assert messages[1]["content"] == "checking" and messages[3]["content"] == ""
    assert messages[4] == {"role": "function", "name": "w", "content": '{"t": 2}'}


def test_tool_result_for_an_unknown_call_or_bad_arguments_is_refused():
    with pytest.raises(InvalidRequest):
        build_messages([{"role": "tool", "tool_call_id": "nope", "content": "{}"}])
    with pytest.raises(InvalidRequest):
        build_messages(
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                    ],
                }
            ]
        )


def test_json_schema_response_format():
    chat = build_chat(
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": True},
            },
        },
        "G",
    )
    assert sdk_json(chat)["response_format"] == {
        "type": "json_schema",
        "schema": {"type": "object"},
        "strict": True,
    }
    plain = build_chat(
        {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}, "G"
    )
    assert "response_format" not in plain


# --- answers ------------------------------------------------------------------------------------


def test_plain_answer():
    out = parse_completion(ANSWER, "gigachat/GigaChat-2")
    assert out["object"] == "chat.completion"
    assert out["id"].startswith("chatcmpl-")
    assert out["created"] == 1765875463
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 17,
        "completion_tokens": 3,
        "total_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 2},
    }


def test_answer_through_the_sdk_model_dump():
    """The provider dumps the SDK's pydantic answer; the shape must be the documented one."""
    dumped = ChatCompletion(**FUNCTION_ANSWER).model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude={"x_headers"}
    )
    out = parse_completion(dumped, "m")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": STATE_ID,
            "type": "function",
            "function": {"name": "weather_forecast", "arguments": '{"location": "Москва", "num_days": 0}'},
        }
    ]


@pytest.mark.parametrize(
    "reason,expected",
    [("stop", "stop"), ("length", "length"), ("blacklist", "content_filter"), ("odd", "stop")],
)
def test_finish_reasons(reason, expected):
    data = json.loads(json.dumps(ANSWER))
    data["choices"][0]["finish_reason"] = reason
    assert parse_completion(data, "m")["choices"][0]["finish_reason"] == expected


def test_error_finish_and_empty_answers_fail():
    data = json.loads(json.dumps(ANSWER))
    data["choices"][0]["finish_reason"] = "error"
    with pytest.raises(UpstreamError):
        parse_completion(data, "m")
    with pytest.raises(UpstreamError):
        parse_completion({"choices": []}, "m")


def test_reasoning_content_is_kept():
    data = json.loads(json.dumps(ANSWER))
    data["choices"][0]["message"]["reasoning_content"] = "thinking"
    assert parse_completion(data, "m")["choices"][0]["message"]["reasoning_content"] == "thinking"


def test_usage_without_cache_field():
    assert map_usage({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}) == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
    }


# --- stream -------------------------------------------------------------------------------------


def test_stream_translation():
    chunks = list(translate_stream(STREAM, "m"))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [
        {"role": "assistant", "content": "GigaChat"},
        {"content": " спешит"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:3]] == [None, None, "stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 18,
        "completion_tokens": 6,
        "total_tokens": 24,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert "usage" not in chunks[2]


def test_stream_through_the_sdk_model_dump():
    dumped = [
        ChatCompletionChunk(**c).model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"x_headers"}
        )
        for c in STREAM
    ]
    assert [
        c["choices"][0]["delta"].get("content") for c in translate_stream(dumped, "m") if c["choices"]
    ] == [
        "GigaChat",
        " спешит",
        None,
    ]


def test_stream_function_call_arrives_whole():
    chunk = {
        "choices": [
            {
                "delta": {
                    "content": "",
                    "role": "assistant",
                    "function_call": {"name": "weather_forecast", "arguments": {"location": "Москва"}},
                    "functions_state_id": STATE_ID,
                },
                "index": 0,
                "finish_reason": "function_call",
            }
        ],
        "created": 1,
        "model": "GigaChat-2",
        "object": "chat.completion",
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }
    chunks = list(translate_stream([chunk], "m"))
    delta = chunks[0]["choices"][0]["delta"]
    assert delta == {
        "role": "assistant",
        "tool_calls": [
            {
                "index": 0,
                "id": STATE_ID,
                "type": "function",
                "function": {"name": "weather_forecast", "arguments": '{"location": "Москва"}'},
            }
        ],
    }
    assert chunks[0]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[1]["usage"]["total_tokens"] == 10


def test_stream_skips_function_in_progress_and_adds_missing_role():
    started: set[int] = set()
    progress = {"choices": [{"delta": {"role": "function_in_progress", "content": "searching…"}, "index": 0}]}
    assert stream_chunk(progress, "id", started, "m") is None
    first = stream_chunk({"choices": [{"delta": {"content": "hi"}, "index": 0}]}, "id", started, "m")
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "hi"}


def test_stream_without_finish_reason_is_an_error():
    with pytest.raises(UpstreamError, match="ended before"):
        list(translate_stream(STREAM[:2], "m"))


def test_stream_error_finish_is_an_error():
    bad = json.loads(json.dumps(STREAM[2]))
    bad["choices"][0]["finish_reason"] = "error"
    with pytest.raises(UpstreamError):
        list(translate_stream([STREAM[0], bad], "m"))


# --- errors -------------------------------------------------------------------------------------

API = "https://gigachat.devices.sberbank.ru/api/v1/chat/completions"
AUTH = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"


def err(cls, status, body, url=API, headers=None):
    return cls(url, status, json.dumps(body).encode(), httpx.Headers(headers or {}))


def test_error_mapping_by_status():
    assert isinstance(
        map_error(err(AuthenticationError, 401, {"status": 401, "message": "Token has expired"}), "m", AUTH),
        UpstreamAuthError,
    )
    limited = map_error(
        err(
            RateLimitError, 429, {"status": 429, "message": "Too Many Requests"}, headers={"Retry-After": "7"}
        ),
        "m",
    )
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    assert isinstance(
        map_error(err(ResponseError, 402, {"status": 402, "message": "Payment Required"}), "m"), RateLimited
    )
    bad = map_error(
        err(
            UnprocessableEntityError,
            422,
            {"status": 422, "message": "system message must be the first message"},
        ),
        "m",
    )
    assert isinstance(bad, UpstreamBadRequest) and bad.message == "system message must be the first message"
    assert isinstance(
        map_error(err(BadRequestError, 400, {"status": 400, "message": "x"}), "m"), UpstreamBadRequest
    )
    missing = map_error(err(NotFoundError, 404, {"status": 404, "message": "No such model"}), "m")
    assert type(missing) is UpstreamError and "No such model" in missing.message
    assert (
        type(map_error(err(ServerError, 500, {"status": 500, "message": "Internal Server Error"}), "m"))
        is UpstreamError
    )
    assert isinstance(map_error(err(ServerError, 504, {}), "m"), UpstreamTimeout)


def test_oauth_errors_are_auth_errors_without_details_or_secrets():
    key = base64.b64encode(b"cid:secret").decode()
    for status, body in [
        (401, {"code": 6, "message": "credentials doesn't match db data"}),
        (400, {"code": 7, "message": f"scope from db not fully includes consumed scope {key}"}),
    ]:
        mapped = map_error(err(ResponseError, status, body, url=AUTH), "m", AUTH, (key, "cid:secret"))
        assert isinstance(mapped, UpstreamAuthError)
        assert key not in mapped.message and "secret" not in mapped.message
    assert isinstance(map_error(err(ServerError, 503, {}, url=AUTH), "m", AUTH), UpstreamError)


def test_transport_and_parse_errors():
    request = httpx.Request("POST", API)
    assert isinstance(map_error(httpx.ReadTimeout("slow", request=request), "m"), UpstreamTimeout)
    assert isinstance(map_error(httpx.ConnectTimeout("slow", request=request), "m"), UpstreamTimeout)
    refused = map_error(httpx.ConnectError("refused", request=request), "m")
    assert type(refused) is UpstreamError and "http" not in refused.message
    assert type(map_error(httpx.TransportError("Expected response Content-Type"), "m")) is UpstreamError
    assert type(map_error(ValueError("bad json"), "m")) is UpstreamError


def test_upstream_messages_are_redacted():
    mapped = map_error(
        err(BadRequestError, 400, {"status": 400, "message": "bad cid:secret"}), "m", "", ["cid:secret"]
    )
    assert mapped.message == "bad ***"


# --- TLS setting ----------------------------------------------------------------------------------


def test_verify_setting_per_model_or_global():
    import ssl

    import certifi

    from app.config import HttpConfig, ModelConfig
    from app.providers.gigachat import _verify

    def model(verify):
        return ModelConfig(
            name="g", provider="gigachat", url="https://x/api/v1", upstream_model="G", verify_ssl_certs=verify
        )

    assert _verify(model(False), HttpConfig(verify=True)) is False
    assert _verify(model(True), HttpConfig()) is True
    assert isinstance(_verify(model(certifi.where()), HttpConfig()), ssl.SSLContext)
    assert isinstance(_verify(model(True), HttpConfig(verify=certifi.where())), ssl.SSLContext)
    assert _verify(model(True), HttpConfig(verify=False)) is False
