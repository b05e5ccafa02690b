"""Unit tests of the pure GigaChat translations, from the shapes recorded in 07-gigachat.md."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.errors import (
    InvalidRequest,
    ProxyError,
    UpstreamError,
)
from app.providers.gigachat import (
    AccessToken,
    authorization_key,
    build_messages,
    build_payload,
    function_call_for,
    map_usage,
    parse_chunks,
    parse_completion,
    parse_token,
)
from app.providers.shape import TRANSLATION_ERRORS
from app.sse import SSEEvent

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


def build_chat(body: dict, model: str) -> dict:
    return build_payload(body, model, stream=False)


def translate_stream(chunks: list, model_name: str) -> list[dict]:
    return list(parse_chunks([SSEEvent("", json.dumps(c).encode()) for c in chunks], model_name))


# --- credentials ---------------------------------------------------------------------------------


def test_credentials_pair_is_base64_encoded_and_key_kept():
    assert authorization_key("cid:secret") == base64.b64encode(b"cid:secret").decode()
    key = base64.b64encode(b"cid:secret").decode()
    assert authorization_key(key) == key
    assert authorization_key(f"Basic {key}") == key


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
    assert chat == {
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
    wire = chat
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
    assert chat["functions"] == [{"name": "now", "parameters": {"type": "object", "properties": {}}}]


def test_legacy_functions_are_accepted():
    chat = build_chat(
        {
            "messages": [{"role": "user", "content": "x"}],
            "functions": [WEATHER["function"]],
            "function_call": {"name": "weather_forecast"},
        },
        "G",
    )
    assert chat["function_call"] == {"name": "weather_forecast"}


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
                        "function": {"name": "weather_forecast", "arguments": '{"location":"Москва"}'},
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
    assert chat["response_format"] == {
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
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 17,
        "completion_tokens": 3,
        "total_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 2},
    }


def test_function_call_answer():
    choice = parse_completion(FUNCTION_ANSWER, "m")["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": STATE_ID,
            "type": "function",
            "function": {"name": "weather_forecast", "arguments": '{"location":"Москва","num_days":0}'},
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
    with pytest.raises(ValueError):
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
    }
    assert "usage" not in chunks[2]


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
                "function": {"name": "weather_forecast", "arguments": '{"location":"Москва"}'},
            }
        ],
    }
    assert chunks[0]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[1]["usage"]["total_tokens"] == 10


def test_stream_skips_function_in_progress_and_adds_missing_role():
    progress = {"choices": [{"delta": {"role": "function_in_progress", "content": "searching…"}, "index": 0}]}
    text = {"choices": [{"delta": {"content": "hi"}, "index": 0, "finish_reason": "stop"}]}
    (first,) = translate_stream([progress, text], "m")
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "hi"}


def test_stream_without_finish_reason_is_an_error():
    with pytest.raises(UpstreamError, match="ended before"):
        list(translate_stream(STREAM[:2], "m"))


def test_stream_error_finish_is_an_error():
    bad = json.loads(json.dumps(STREAM[2]))
    bad["choices"][0]["finish_reason"] = "error"
    with pytest.raises(UpstreamError):
        list(translate_stream([STREAM[0], bad], "m"))


def test_stream_error_event_inside_a_200_fails_with_its_message():
    with pytest.raises(UpstreamError, match="HTTP 500: session lost"):
        translate_stream([STREAM[0], {"status": 500, "message": "session lost"}], "m")


# --- malformed answers: a translation error (which the transport's boundary makes a typed 502) ----


def mutated(base: dict, path: tuple, value) -> dict:
    """A deep copy of `base` with the item at `path` replaced (or removed when value is DELETE)."""
    data = json.loads(json.dumps(base))
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


DELETE = object()
MESSAGE = ("choices", 0, "message")
CALL = (*MESSAGE, "function_call")
# (path in the answer, a bad value): every field the adapter reads, missing or of a wrong type
BAD_FIELDS = [
    (("choices",), DELETE),
    (("choices",), {}),
    (("choices",), "x"),
    (("choices",), []),
    (("choices", 0), 1),
    (("choices", 0), []),
    (MESSAGE, DELETE),
    (MESSAGE, "x"),
    (MESSAGE, []),
    ((*MESSAGE, "content"), 5),
    ((*MESSAGE, "content"), ["x"]),
    ((*MESSAGE, "reasoning_content"), {}),
    (CALL, "f"),
    (CALL, {}),
    (CALL, {"name": 5}),
    (CALL, {"name": "f", "arguments": [1]}),
    (CALL, {"name": "f", "arguments": 5}),
    ((*MESSAGE, "functions_state_id"), 5),
    (("choices", 0, "finish_reason"), 5),
    (("choices", 0, "finish_reason"), "error"),
    (("choices", 0, "index"), "0"),
    (("choices", 0, "index"), True),
    (("created",), "yesterday"),
    (("usage",), []),
    (("usage", "prompt_tokens"), "17"),
    (("usage", "total_tokens"), {}),
    (("usage", "precached_prompt_tokens"), [2]),
]
ANSWER_ONLY = [(MESSAGE, DELETE), (("choices",), []), (("created",), "yesterday")]
STREAM_ONLY = [((*MESSAGE, "role"), 5)]


def needs_call(path: tuple) -> dict:
    """The answer to mutate: the function-call one when the path reaches into its call."""
    return FUNCTION_ANSWER if "function" in "".join(map(str, path)) else ANSWER


@pytest.mark.parametrize("path,value", BAD_FIELDS)
def test_malformed_answers_raise_translation_errors(path, value):
    with pytest.raises((*TRANSLATION_ERRORS, UpstreamError)):
        parse_completion(mutated(needs_call(path), path, value), "m")


@pytest.mark.parametrize("path,value", [c for c in BAD_FIELDS if c not in ANSWER_ONLY] + STREAM_ONLY)
def test_malformed_stream_events_raise_translation_errors(path, value):
    """The same mutations on a stream's last event (a choice's `message` is its `delta` there)."""
    event = mutated(needs_call(path), path, value)
    choices = event.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict) and "message" in choices[0]:
        choices[0]["delta"] = choices[0].pop("message")
    with pytest.raises((*TRANSLATION_ERRORS, UpstreamError)):
        translate_stream([STREAM[0], event], "m")


def test_the_recorded_shapes_pass_the_same_checks():
    """The table's base answers are valid: each failure above comes from its one mutation."""
    assert parse_completion(FUNCTION_ANSWER, "m")["choices"] and parse_completion(ANSWER, "m")["choices"]
    assert translate_stream([STREAM[0], {**ANSWER, "choices": [{"delta": {}, "finish_reason": "stop"}]}], "m")


def test_negative_usage_counts_become_zero():
    counts = map_usage({"prompt_tokens": -5, "completion_tokens": 2, "total_tokens": -100000000})
    assert counts == {"prompt_tokens": 0, "completion_tokens": 2, "total_tokens": 2}


def test_error_in_a_200_answer_is_an_upstream_error_with_its_message():
    with pytest.raises(UpstreamError, match="Internal Server Error"):
        parse_completion({"status": 500, "message": "Internal Server Error"}, "m")


# --- OAuth answer and error bodies --------------------------------------------------------------


def test_token_expiry_is_read_in_milliseconds_or_seconds():
    assert parse_token({"access_token": "t", "expires_at": 1706026848841}) == ("t", 1706026848.841)
    assert parse_token({"access_token": "t", "expires_at": 4102444800}) == ("t", 4102444800.0)


@pytest.mark.parametrize(
    "data",
    [
        [],
        "tok",
        {},
        {"access_token": "t"},
        {"expires_at": 1},
        {"access_token": "", "expires_at": 1},
        {"access_token": 5, "expires_at": 1},
        {"access_token": "t", "expires_at": "soon"},
        {"access_token": "t", "expires_at": True},
    ],
)
def test_malformed_token_answers(data):
    with pytest.raises(ValueError):
        parse_token(data)


# --- the token cache (in-process, injected fetch and clock) -------------------------------------


class Issuer:
    """A fake OAuth endpoint for AccessToken: counts fetches, tokens valid for `ttl` seconds."""

    def __init__(self, clock: list[float], ttl: float = 1800.0, delay: float = 0.0) -> None:
        self.clock, self.ttl, self.delay = clock, ttl, delay
        self.fetches = 0
        self.failure: Exception | None = None
        self.lock = threading.Lock()

    def __call__(self) -> tuple[str, float]:
        with self.lock:
            self.fetches += 1
            number = self.fetches
        time.sleep(self.delay)  # widens the window in which other threads pile up
        if self.failure is not None:
            raise self.failure
        return f"tok-{number}", self.clock[0] + self.ttl


def together(count: int, work):
    start = threading.Barrier(count)

    def run(_):
        start.wait()
        return work()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_many_threads_share_one_fetch():
    clock = [1000.0]
    issuer = Issuer(clock, delay=0.05)
    token = AccessToken(issuer, clock=lambda: clock[0])
    assert together(20, token.get) == ["tok-1"] * 20
    assert issuer.fetches == 1


def test_twenty_concurrent_rejections_cause_exactly_one_refresh():
    clock = [1000.0]
    issuer = Issuer(clock, delay=0.05)
    token = AccessToken(issuer, clock=lambda: clock[0])
    sent = token.get()

    def rejected_then_retry():
        token.reject(sent)
        return token.get()

    assert together(20, rejected_then_retry) == ["tok-2"] * 20
    assert issuer.fetches == 2
    token.reject(sent)  # a late 401 for the old token leaves the new one alone
    assert token.get() == "tok-2" and issuer.fetches == 2
    assert token.recent == ("tok-2", "tok-1")


def test_token_is_replaced_a_minute_before_it_expires():
    clock = [1000.0]
    issuer = Issuer(clock, ttl=120.0)
    token = AccessToken(issuer, clock=lambda: clock[0])
    assert token.get() == "tok-1"
    clock[0] += 59.0
    assert token.get() == "tok-1"
    clock[0] += 2.0  # 59 s left: inside the 60 s margin
    assert token.get() == "tok-2" and issuer.fetches == 2


def test_a_failed_fetch_is_shared_by_the_threads_that_waited_then_retried():
    clock = [1000.0]
    issuer = Issuer(clock, delay=0.05)
    issuer.failure = UpstreamError("OAuth down")
    token = AccessToken(issuer, clock=lambda: clock[0])

    def attempt():
        try:
            return token.get()
        except UpstreamError as exc:
            return exc.message

    assert together(20, attempt) == ["OAuth down"] * 20
    # not one OAuth timeout per waiting thread (a thread the barrier released late may try once more)
    assert issuer.fetches <= 3
    issuer.failure = None
    tried = issuer.fetches
    assert token.get() == f"tok-{tried + 1}"  # the next request tries again


# --- any client input: a GigaChat request or a 400, never a raw exception -----------------------

DEEP = "[" * 100_000  # JSON nested too deep to parse, inside a string (tool arguments or results)
ODD_VALUES = [None, True, 0, -1, 1.5, "x", "", [], [1], ["x"], [{}], {}, {"a": 1}, {"function": "f"}, DEEP]
ROUND_TRIP = [
    {"role": "system", "content": "s"},
    {"role": "user", "content": [{"type": "text", "text": "q"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": STATE_ID, "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": STATE_ID, "content": "{}"},
]
REQUEST = {"messages": ROUND_TRIP, "tools": [WEATHER], "tool_choice": "auto", "temperature": 0.5}
# every place the request translation reads, as a path into REQUEST
READ_PATHS = [
    ("messages",),
    *[
        (key,)
        for key in ("temperature", "top_p", "repetition_penalty", "max_tokens", "max_completion_tokens")
    ],
    *[(key,) for key in ("n", "reasoning_effort", "response_format", "tools", "tool_choice")],
    *[(key,) for key in ("functions", "function_call", "stop")],
    ("messages", 0),
    ("messages", 0, "role"),
    ("messages", 1, "content"),
    ("messages", 1, "content", 0),
    ("messages", 1, "content", 0, "text"),
    ("messages", 2, "tool_calls"),
    ("messages", 2, "tool_calls", 0),
    ("messages", 2, "tool_calls", 0, "id"),
    ("messages", 2, "tool_calls", 0, "function"),
    ("messages", 2, "tool_calls", 0, "function", "name"),
    ("messages", 2, "tool_calls", 0, "function", "arguments"),
    ("messages", 3, "tool_call_id"),
    ("messages", 3, "content"),
    ("tools", 0),
    ("tools", 0, "function"),
    ("tools", 0, "function", "name"),
    ("tools", 0, "function", "parameters"),
]


@pytest.mark.parametrize("path", READ_PATHS, ids=lambda p: ".".join(map(str, p)))
def test_any_value_anywhere_is_a_payload_or_a_400(path):
    for value in ODD_VALUES:
        body = mutated(REQUEST, path, value)
        try:
            payload = build_payload(body, "G", stream=True)
        except InvalidRequest:
            continue
        json.dumps(payload)  # and what is sent is JSON


# --- every field of the recorded shapes replaced by every other JSON type ------------------------

WRONG = (None, 5, True, "text", [1], {"k": "v"})


def json_paths(value, prefix=()):
    """Every key and index path inside a JSON value."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from json_paths(child, (*prefix, key))


def every_mutation(value):
    for path in json_paths(value):
        original = value
        for key in path:
            original = original[key]
        for wrong in WRONG:
            if type(wrong) is not type(original):
                yield mutated(value, path, wrong)


def assert_openai_shape(body: dict, streamed: bool) -> None:
    """What a client may rely on, checked independently of the adapter's code."""
    assert isinstance(body["id"], str) and isinstance(body["created"], int) and body["model"] == "m"
    for choice in body["choices"]:
        assert isinstance(choice["index"], int) and not isinstance(choice["index"], bool)
        assert choice["finish_reason"] is None or isinstance(choice["finish_reason"], str)
        message = choice["delta" if streamed else "message"]
        for field in ("role", "content", "reasoning_content"):
            assert message.get(field) is None or isinstance(message[field], str)
        for call in message.get("tool_calls") or ():
            assert isinstance(call["id"], str) and isinstance(call["function"]["name"], str)
            assert isinstance(call["function"]["arguments"], str)
    for count in (body.get("usage") or {}).values():
        assert isinstance(count, dict) or (isinstance(count, int) and count >= 0)


def outcome(translate) -> str:
    """ "ok" for an answer a client can rely on; "error" for what the boundary makes a typed 502."""
    try:
        translate()
    except (*TRANSLATION_ERRORS, ProxyError):
        return "error"
    return "ok"


@pytest.mark.parametrize("answer", [ANSWER, FUNCTION_ANSWER], ids=["text", "function_call"])
def test_every_wrong_type_in_an_answer_is_typed(answer):
    outcomes = []
    for bad in every_mutation(answer):
        outcomes.append(outcome(lambda bad=bad: assert_openai_shape(parse_completion(bad, "m"), False)))
    assert "error" in outcomes and "ok" in outcomes  # both kinds occur: the table is not vacuous


FUNCTION_STREAM = [
    {
        "choices": [
            {"delta": FUNCTION_ANSWER["choices"][0]["message"], "index": 0, "finish_reason": "function_call"}
        ],
        "created": 1706016586,
        "model": "GigaChat-2:2.0.28.2",
        "object": "chat.completion",
        "usage": FUNCTION_ANSWER["usage"],
    }
]


@pytest.mark.parametrize("events", [STREAM, FUNCTION_STREAM], ids=["text", "function_call"])
def test_every_wrong_type_in_a_stream_event_is_typed(events):
    def chunks(bad):
        for chunk in translate_stream(bad, "m"):
            assert_openai_shape(chunk, True)

    outcomes = [outcome(lambda bad=bad: chunks(bad)) for bad in every_mutation(events)]
    assert "error" in outcomes and "ok" in outcomes


def test_a_token_inside_its_margin_still_serves_when_the_refresh_fails():
    clock = [1000.0]
    issuer = Issuer(clock, ttl=120.0)
    token = AccessToken(issuer, clock=lambda: clock[0])
    assert token.get() == "tok-1"
    clock[0] += 90.0  # 30 s left: time to refresh, but OAuth is down
    issuer.failure = UpstreamError("OAuth down")
    assert token.get() == "tok-1"
    clock[0] += 31.0  # expired: now the failure shows
    with pytest.raises(UpstreamError, match="OAuth down"):
        token.get()
    issuer.failure = None
    assert token.get() == f"tok-{issuer.fetches}"
