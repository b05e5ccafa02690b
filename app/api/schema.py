"""The chat request schema, checked once before routing: every field an adapter reads has its type.

A wrong field is a 400 `invalid_request_error` whose `param` names it (`messages[2].tool_calls[0].id`);
adapters then trust the types they receive. Fields nobody reads pass through untouched (clients send
extras), and null stands for "not set" wherever OpenAI allows it. Nesting deeper than `MAX_DEPTH`
anywhere in the body is refused without recursion (the JSON encoder refuses more than 255 levels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.errors import InvalidRequest

MAX_DEPTH = 64
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})

Check = Callable[[Any, str], None]


def _fail(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' must be {what}", param=param)


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, where a boolean is not a number."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _typed(kind: type | tuple[type, ...], what: str, minimum: int | None = None) -> Check:
    def check(value: Any, param: str) -> None:
        if not _is(value, kind) or (minimum is not None and value < minimum):
            raise _fail(param, what)

    return check


STRING = _typed(str, "a string")
OBJECT = _typed(dict, "an object")
NUMBER = _typed((int, float), "a number")
INTEGER = _typed(int, "an integer")
POSITIVE = _typed(int, "a positive integer", minimum=1)
BOOLEAN = _typed(bool, "a boolean")


def _fields(value: Any, param: str, fields: Mapping[str, Check], required: tuple[str, ...] = ()) -> None:
    """`value` is an object whose `fields` that are set (not null) pass their checks."""
    OBJECT(value, param)
    for name in required:
        if value.get(name) is None:
            raise InvalidRequest(f"'{param}.{name}' is required", param=f"{param}.{name}")
    for name, check in fields.items():
        if value.get(name) is not None:
            check(value[name], f"{param}.{name}" if param else name)


def _list_of(check: Check, what: str) -> Check:
    def check_list(value: Any, param: str) -> None:
        if not isinstance(value, list):
            raise _fail(param, what)
        for i, item in enumerate(value):
            check(item, f"{param}[{i}]")

    return check_list


def _one_of(allowed: frozenset[str]) -> Check:
    def check(value: Any, param: str) -> None:
        if not isinstance(value, str) or value not in allowed:
            raise _fail(param, f"one of {', '.join(sorted(allowed))}")

    return check


def _function(value: Any, param: str) -> None:
    _fields(value, param, {"name": STRING, "arguments": STRING}, required=("name",))


def _tool_call(value: Any, param: str) -> None:
    _fields(value, param, {"id": STRING, "type": _one_of(frozenset({"function"})), "function": _function})
    if value.get("function") is None:
        raise InvalidRequest(f"'{param}.function' is required", param=f"{param}.function")


def _content_part(value: Any, param: str) -> None:
    _fields(value, param, {"type": STRING}, required=("type",))
    if value["type"] == "text":
        STRING(value.get("text"), f"{param}.text")


def _content(value: Any, param: str) -> None:
    if not isinstance(value, str):
        _list_of(_content_part, "a string or a list of content parts")(value, param)


def _legacy_call(value: Any, param: str) -> None:
    """A legacy assistant `function_call`: arguments as a JSON string or an object."""
    arguments = _typed((str, dict), "a string or an object")
    _fields(value, param, {"name": STRING, "arguments": arguments}, required=("name",))


MESSAGE = {
    "role": _one_of(ROLES),
    "content": _content,
    "name": STRING,
    "tool_calls": _list_of(_tool_call, "a list of tool calls"),
    "tool_call_id": STRING,
    "function_call": _legacy_call,
}


def _message(value: Any, param: str) -> None:
    _fields(value, param, MESSAGE)
    MESSAGE["role"](value.get("role"), f"{param}.role")


def _tool(value: Any, param: str) -> None:
    _fields(value, param, {"type": STRING})
    if value.get("type", "function") == "function":
        definition = {"name": STRING, "description": STRING, "parameters": OBJECT}
        _fields(value.get("function"), f"{param}.function", definition, required=("name",))


def _tool_choice(value: Any, param: str) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, dict) or value.get("type", "function") != "function":
        raise _fail(param, "a string or {type: function, function: {name}}")
    _fields(value.get("function"), f"{param}.function", {"name": STRING}, required=("name",))


def _stop(value: Any, param: str) -> None:
    if not isinstance(value, str):
        _list_of(STRING, "a string or a list of strings")(value, param)


def _response_format(value: Any, param: str) -> None:
    _fields(value, param, {"type": _one_of(RESPONSE_FORMATS)}, required=("type",))
    if value["type"] == "json_schema":
        _fields(value.get("json_schema"), f"{param}.json_schema", {"name": STRING, "schema": OBJECT})


def _legacy_function(value: Any, param: str) -> None:
    _fields(value, param, {"name": STRING, "description": STRING, "parameters": OBJECT}, required=("name",))


def _function_choice(value: Any, param: str) -> None:
    if not isinstance(value, str):
        _fields(value, param, {"name": STRING}, required=("name",))


CHAT = {
    "model": STRING,
    "messages": _list_of(_message, "a list of messages"),
    "tools": _list_of(_tool, "a list of tools"),
    "tool_choice": _tool_choice,
    "functions": _list_of(_legacy_function, "a list of functions"),
    "function_call": _function_choice,
    "stop": _stop,
    "response_format": _response_format,
    "max_tokens": POSITIVE,
    "max_completion_tokens": POSITIVE,
    "n": POSITIVE,
    "seed": INTEGER,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "top_k": NUMBER,
    "frequency_penalty": NUMBER,
    "presence_penalty": NUMBER,
    "repetition_penalty": NUMBER,
    "reasoning_effort": STRING,
    "stream": BOOLEAN,
    "stream_options": OBJECT,
}


def check_depth(body: Any, limit: int = MAX_DEPTH) -> None:
    """A 400 when objects and lists nest deeper than `limit` anywhere (walked with a stack)."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise InvalidRequest(f"The request body nests deeper than {limit} levels")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def check_chat(body: dict[str, Any]) -> None:
    """Check a chat request's shape; InvalidRequest names the first wrong field."""
    check_depth(body)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    _fields(body, "", CHAT)
