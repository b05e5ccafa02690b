"""The chat request schema: a 400 naming the field, before any upstream is called; extras pass through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.api.schema import MAX_DEPTH, check_chat
from app.config import parse_config
from app.errors import InvalidRequest
from tests.fakes import cloudflare as cf_fake
from tests.fakes import cohere as cohere_fake
from tests.fakes import gemini as gemini_fake
from tests.fakes.cloudflare import FakeCloudflare
from tests.fakes.cohere import FakeCohere
from tests.fakes.gemini import FakeGemini
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import FakeServer

HI = [{"role": "user", "content": "Hi"}]


def nested(depth: int) -> Any:
    """A JSON value `depth` levels deep (lists and objects in turn)."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeServer]]:
    with (
        FakeOpenAI() as openai,
        FakeGemini() as gemini,
        FakeCohere() as cohere,
        FakeCloudflare() as cloudflare,
    ):
        yield {"openai": openai, "gemini": gemini, "cohere": cohere, "cloudflare": cloudflare}


@pytest.fixture(scope="module")
def app(fakes: dict[str, Any]) -> Flask:
    models = [
        {
            "name": "openai/m",
            "provider": "openai",
            "url": fakes["openai"].chat_url,
            "token": "sk-fake-upstream-key",
        },
        {
            "name": "gemini/m",
            "provider": "gemini",
            "url": fakes["gemini"].base_url,
            "token": gemini_fake.API_KEY,
        },
        {
            "name": "cohere/m",
            "provider": "cohere",
            "url": fakes["cohere"].chat_url,
            "token": cohere_fake.API_KEY,
        },
        {
            "name": "cloudflare/m",
            "provider": "cloudflare",
            "url": fakes["cloudflare"].run_url,
            "upstream_model": cf_fake.MODEL,
            "token": cf_fake.API_TOKEN,
        },
    ]
    return create_app(parse_config({"storage": "memory", "models": models}, {}))


def nested_text(depth: int) -> str:
    """`nested(depth)` as JSON text (json.dumps would recurse past Python's limit)."""
    opening = "".join("[" if level % 2 else '{"k":' for level in reversed(range(depth)))
    return opening + "1" + "".join("]" if level % 2 else "}" for level in range(depth))


def post(app: Flask, body: dict[str, Any], deep: int = 0) -> tuple[int, dict[str, Any]]:
    """POST `body`, the string "DEEP" in it replaced by a value `deep` levels deep."""
    text = json.dumps(body).replace('"DEEP"', nested_text(deep))
    response = app.test_client().post("/v1/chat/completions", data=text, content_type="application/json")
    return response.status_code, response.get_json()


def upstream_calls(fakes: dict[str, FakeServer]) -> int:
    return sum(len(fake.requests) for fake in fakes.values())


# the repros of issue 10 item 3 (each was a 500), per provider they broke
REPROS = [
    ("openai", {"messages": [{"role": ["user"], "content": "Hi"}]}, "messages[0].role"),
    ("gemini", {"messages": HI, "stop": 5}, "stop"),
    ("cohere", {"messages": HI, "stop": 5}, "stop"),
    *(
        (provider, {"messages": HI, "response_format": {"type": "json_schema", "json_schema": "x"}}, param)
        for provider in ("gemini", "cohere", "cloudflare")
        for param in ["response_format.json_schema"]
    ),
    *(
        (
            provider,
            {"messages": HI, "tool_choice": {"type": "function", "function": "f"}},
            "tool_choice.function",
        )
        for provider in ("cohere", "cloudflare")
    ),
    *(
        (
            provider,
            {"messages": [*HI, {"role": "assistant", "content": None, "tool_calls": [1]}]},
            "messages[1].tool_calls[0]",
        )
        for provider in ("cohere", "cloudflare")
    ),
]


@pytest.mark.parametrize(("provider", "body", "param"), REPROS)
def test_repros_are_400s_naming_the_field(
    app: Flask, fakes: dict[str, FakeServer], provider: str, body: dict[str, Any], param: str
) -> None:
    before = upstream_calls(fakes)
    for stream in (False, True):
        status, answer = post(app, {"model": f"{provider}/m", **body, "stream": stream})
        assert status == 400
        assert answer["error"]["type"] == "invalid_request_error"
        assert answer["error"]["param"] == param
    assert upstream_calls(fakes) == before  # refused before routing


@pytest.mark.parametrize("depth", [65, 300, 1000])
@pytest.mark.parametrize("key", ["metadata", "tools", "messages"])
def test_deep_nesting_under_any_key_is_a_400(
    app: Flask, fakes: dict[str, FakeServer], depth: int, key: str
) -> None:
    body: dict[str, Any] = {"model": "openai/m", "messages": HI}
    if key == "messages":
        body["messages"] = [{"role": "user", "content": "Hi", "extra": "DEEP"}]
    else:
        body[key] = "DEEP"
    before = upstream_calls(fakes)
    status, answer = post(app, body, deep=depth)
    assert status == 400 and "nests deeper" in answer["error"]["message"]
    assert upstream_calls(fakes) == before


def test_nesting_within_the_limit_and_unknown_fields_pass_through(
    app: Flask, fakes: dict[str, FakeServer]
) -> None:
    extras = {
        "metadata": nested(MAX_DEPTH - 1),
        "user": "u1",
        "logit_bias": {"50256": -100},
        "x_vendor": [1, "a"],
    }
    status, answer = post(app, {"model": "openai/m", "messages": HI, **extras})
    assert status == 200, answer
    sent = fakes["openai"].requests[-1].json
    assert {k: sent[k] for k in extras} == extras


@pytest.mark.parametrize("provider", ["openai", "gemini", "cohere", "cloudflare"])
def test_a_full_valid_request_reaches_each_provider(
    app: Flask, fakes: dict[str, FakeServer], provider: str
) -> None:
    body = {
        "model": f"{provider}/m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}], "name": "ann"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"c": "P"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"t": 20}'},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "stop": ["END"],
        "max_completion_tokens": 50,
        "temperature": 0.5,
        "top_p": 1,
        "seed": 7,
        "stream_options": None,
    }
    before = upstream_calls(fakes)
    status, answer = post(app, body)
    assert status == 200, answer
    response = app.test_client().post("/v1/chat/completions", json={**body, "stream": True})
    assert response.status_code == 200 and response.get_data().endswith(b"data: [DONE]\n\n")
    assert upstream_calls(fakes) == before + 2


# --- the check itself -------------------------------------------------------------------------------

BAD = [
    ({"messages": [{"role": 1}]}, "messages[0].role"),
    ({"messages": [{"content": "no role"}]}, "messages[0].role"),
    ({"messages": [{"role": "robot"}]}, "messages[0].role"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content[0].type"),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages[0].content[0].text",
    ),
    ({"messages": [{"role": "user", "content": "x", "name": 5}]}, "messages[0].name"),
    ({"messages": [{"role": "assistant", "tool_calls": {"id": "x"}}]}, "messages[0].tool_calls"),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"id": 5, "function": {"name": "f"}}]}]},
        "messages[0].tool_calls[0].id",
    ),
    (
        {
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "x", "function": {"name": "f"}}]}
            ]
        },
        "messages[0].tool_calls[0].type",
    ),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]},
        "messages[0].tool_calls[0].function",
    ),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": "f"}]}]},
        "messages[0].tool_calls[0].function",
    ),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": 5}}]}]},
        "messages[0].tool_calls[0].function.name",
    ),
    (
        {
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]}
            ]
        },
        "messages[0].tool_calls[0].function.arguments",
    ),
    ({"messages": [{"role": "tool", "tool_call_id": ["c"], "content": "x"}]}, "messages[0].tool_call_id"),
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [{"type": "function", "function": "f"}]}, "tools[0].function"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
        "tools[0].function.parameters",
    ),
    ({"tool_choice": 1}, "tool_choice"),
    ({"tool_choice": {"type": "function"}}, "tool_choice.function"),
    ({"tool_choice": {"type": "function", "function": {"name": 1}}}, "tool_choice.function.name"),
    ({"stop": [1]}, "stop[0]"),
    ({"stop": {"a": 1}}, "stop"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}},
        "response_format.json_schema.schema",
    ),
    *(
        ({name: value}, name)
        for name in ("max_tokens", "max_completion_tokens", "n")
        for value in (True, 1.5, "5", 0)
    ),
    ({"seed": True}, "seed"),
    ({"seed": "1"}, "seed"),
    *(
        ({name: value}, name)
        for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty")
        for value in (True, "1")
    ),
    ({"stream": "yes"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"stream_options": True}, "stream_options"),
    ({"stream_options": ["include_usage"]}, "stream_options"),
]


@pytest.mark.parametrize(("fields", "param"), BAD)
def test_bad_fields_name_their_param(fields: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": HI, **fields}
    with pytest.raises(InvalidRequest) as info:
        check_chat(body)
    assert info.value.param == param
    assert info.value.status == 400 and info.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    "fields",
    [
        {"stop": "END", "stream": None, "n": None, "temperature": 0, "top_p": 0.9, "seed": -1},
        {"stream": True, "n": 2, "max_tokens": 1, "max_completion_tokens": 10, "frequency_penalty": -0.5},
        {"stream": False, "presence_penalty": 1, "temperature": 1.5},
        {
            "tool_choice": "auto",
            "response_format": {"type": "json_object"},
            "stream_options": {"include_usage": True},
        },
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            }
        },
        {
            "tools": [{"type": "web_search"}],
            "tool_choice": "required",
        },  # other tool types are the upstream's to judge
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
        {"messages": [{"role": "developer", "content": None}, {"role": "user", "content": "x", "vendor": 1}]},
        {"messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": {"a": 1}}}]},
        {"functions": [{"name": "f", "parameters": {}}], "function_call": {"name": "f"}},
    ],
)
def test_valid_fields_pass(fields: dict[str, Any]) -> None:
    body = {"model": "m", "messages": HI, **fields}
    before = repr(body)
    check_chat(body)
    assert repr(body) == before  # untouched


def test_nested_text_is_nested() -> None:
    assert json.loads(nested_text(5)) == nested(5)


def test_depth_is_checked_without_recursion() -> None:
    check_chat({"model": "m", "messages": HI, "x": nested(MAX_DEPTH - 1)})
    with pytest.raises(InvalidRequest, match="nests deeper"):
        check_chat({"model": "m", "messages": HI, "x": nested(MAX_DEPTH)})
    with pytest.raises(InvalidRequest, match="nests deeper"):
        check_chat({"model": "m", "messages": HI, "x": nested(100_000)})  # far past the recursion limit
