"""Any JSON a client sends to the front adapters is translated or refused with InvalidRequest (a 400
in the API's own shape), never a crash that would become a 500."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api import anthropic, responses
from app.api.schema import MAX_DEPTH
from app.errors import InvalidRequest

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Shapes near the real ones, so that the fuzzing reaches past the first check.
ANTHROPIC_BLOCK = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "document"])},
    optional={"text": JSON, "source": JSON, "content": JSON, "input": JSON, "is_error": JSON, "id": JSON},
)
ANTHROPIC_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]) | JSON},
    optional={"content": st.lists(ANTHROPIC_BLOCK | JSON, max_size=3) | JSON},
)
ANTHROPIC_FIELDS = (
    "system",
    "max_tokens",
    "tools",
    "tool_choice",
    "thinking",
    "stop_sequences",
    "stream",
    "top_p",
)
RESPONSES_ITEM = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["message", "function_call", "function_call_output", "custom_tool_call", "reasoning"]
        )
        | JSON
    },
    optional={key: JSON for key in ("role", "content", "call_id", "name", "arguments", "output", "input")},
)
RESPONSES_FIELDS = (
    "instructions",
    "tools",
    "tool_choice",
    "reasoning",
    "text",
    "max_output_tokens",
    "stream",
)
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def depth(value: Any) -> int:
    """Levels of objects and lists (a scalar: 0)."""
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return 0
    return 1 + max(map(depth, value), default=0)


def translated_or_refused(translate: Any, body: dict[str, Any]) -> None:
    """Translated, or refused with a 400. The depth is walked once, on the client's body: what a
    front builds from it nests only a few levels deeper (a tool's schema moves under `function`, a
    call item becomes a message's tool call)."""
    try:
        translated = translate(body)
    except InvalidRequest as exc:
        assert exc.status == 400 and exc.message
        return
    chat = translated if isinstance(translated, dict) else translated.chat
    assert depth(chat) <= depth(body) + 3


@FUZZ
@given(st.lists(ANTHROPIC_MESSAGE | JSON, min_size=1, max_size=3) | JSON)
def test_anthropic_messages_never_crash(messages):
    translated_or_refused(anthropic.to_chat, {"model": "m", "messages": messages})


@FUZZ
@given(st.sampled_from(ANTHROPIC_FIELDS), JSON | st.lists(JSON | ANTHROPIC_BLOCK, max_size=3))
def test_anthropic_fields_never_crash(field, value):
    translated_or_refused(
        anthropic.to_chat, {"model": "m", "messages": [{"role": "user", "content": "hi"}], field: value}
    )


@FUZZ
@given(st.lists(RESPONSES_ITEM | JSON, max_size=3) | JSON)
def test_responses_input_never_crashes(items):
    translated_or_refused(responses.to_chat, {"model": "m", "input": items})


@FUZZ
@given(st.sampled_from(RESPONSES_FIELDS), JSON | st.lists(JSON | RESPONSES_ITEM, max_size=3))
def test_responses_fields_never_crash(field, value):
    translated_or_refused(responses.to_chat, {"model": "m", "input": "hi", field: value})


def test_deep_nesting_is_refused_not_a_crash():
    deep: Any = "x"
    for _ in range(300):  # deeper than the JSON encoder goes (255)
        deep = {"a": deep}
    use = {"type": "tool_use", "id": "t", "name": "f", "input": deep}
    body = {
        "model": "m",
        "messages": [{"role": "assistant", "content": [use]}, {"role": "user", "content": "x"}],
    }
    with pytest.raises(InvalidRequest, match="nests deeper"):
        anthropic.to_chat(body)
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "extra": deep}
    with pytest.raises(InvalidRequest, match="nests deeper"):
        responses.to_chat({"model": "m", "input": [{"role": "user", "content": "hi"}, call]})


@pytest.mark.parametrize("front", ["anthropic", "responses"])
def test_depth_is_walked_once_on_the_clients_body(front: str) -> None:
    schema: Any = {"type": "object"}
    for _ in range(MAX_DEPTH - 5):  # the body nests exactly MAX_DEPTH levels deep
        schema = {"a": schema}
    if front == "anthropic":
        translate: Any = anthropic.to_chat
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        body["tools"] = [{"name": "f", "input_schema": {"p": schema}}]
    else:
        translate = lambda body: responses.to_chat(body).chat  # noqa: E731
        body = {
            "model": "m",
            "input": "x",
            "tools": [{"type": "function", "name": "f", "parameters": {"p": schema}}],
        }
    assert depth(body) == MAX_DEPTH
    assert depth(translate(body)) == MAX_DEPTH + 1  # its tool schema moved under `function`
    body["tools"][0]["extra"] = [{"p": schema}]  # one level more, in a field the front drops
    with pytest.raises(InvalidRequest, match="nests deeper"):
        translate(body)
