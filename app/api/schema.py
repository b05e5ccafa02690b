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

Check = Callable[[Any], None]


class _Wrong(Exception):
    """A field that fails its check. The path to it is built only on the way out of the check,
    one step per level (`path`, innermost first), so a valid body costs no strings."""

    def __init__(self, text: str, step: str = "") -> None:
        super().__init__(text)
        self.text = text  # after the field's name: "must be a string", "is required"
        self.path = [step] if step else []

    def error(self) -> InvalidRequest:
        param = "".join(reversed(self.path)).lstrip(".")
        return InvalidRequest(f"'{param}' {self.text}", param=param)


def _at(step: str, check: Check, value: Any) -> None:
    """`check(value)` on the field reached by `step` (".name" or "[i]")."""
    try:
        check(value)
    except _Wrong as wrong:
        wrong.path.append(step)
        raise


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, where a boolean is not a number."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _typed(kind: type | tuple[type, ...], what: str, minimum: int | None = None) -> Check:
    text = f"must be {what}"

    def check(value: Any) -> None:
        if not _is(value, kind) or (minimum is not None and value < minimum):
            raise _Wrong(text)

    return check


STRING = _typed(str, "a string")
OBJECT = _typed(dict, "an object")
NUMBER = _typed((int, float), "a number")
INTEGER = _typed(int, "an integer")
POSITIVE = _typed(int, "a positive integer", minimum=1)
BOOLEAN = _typed(bool, "a boolean")


def _fields(value: Any, fields: Mapping[str, Check], required: tuple[str, ...] = ()) -> None:
    """`value` is an object whose `fields` that are set (not null) pass their checks; the first
    wrong one in the order of `fields` is named."""
    OBJECT(value)
    for name in required:
        if value.get(name) is None:
            raise _Wrong("is required", f".{name}")
    if len(value) < len(fields):  # usually: check what is set, then name a wrong field below
        try:
            for name, item in value.items():
                check = fields.get(name)
                if check is not None and item is not None:
                    check(item)
            return
        except _Wrong:
            pass
    for name, check in fields.items():
        item = value.get(name)
        if item is not None:
            try:
                check(item)
            except _Wrong as wrong:
                wrong.path.append(f".{name}")
                raise


def _list_of(check: Check, what: str) -> Check:
    text = f"must be {what}"

    def check_list(value: Any) -> None:
        if not isinstance(value, list):
            raise _Wrong(text)
        for i, item in enumerate(value):
            try:
                check(item)
            except _Wrong as wrong:
                wrong.path.append(f"[{i}]")
                raise

    return check_list


def _one_of(allowed: frozenset[str]) -> Check:
    text = f"must be one of {', '.join(sorted(allowed))}"

    def check(value: Any) -> None:
        if not isinstance(value, str) or value not in allowed:
            raise _Wrong(text)

    return check


FUNCTION_CALL = {"name": STRING, "arguments": STRING}
TOOL_CALL_TYPE = _one_of(frozenset({"function"}))
LEGACY_ARGUMENTS = _typed((str, dict), "a string or an object")
FUNCTION = {"name": STRING, "description": STRING, "parameters": OBJECT}
JSON_SCHEMA = {"name": STRING, "schema": OBJECT}
RESPONSE_FORMAT = {"type": _one_of(RESPONSE_FORMATS)}


def _function(value: Any) -> None:
    _fields(value, FUNCTION_CALL, required=("name",))


TOOL_CALL = {"id": STRING, "type": TOOL_CALL_TYPE, "function": _function}


def _tool_call(value: Any) -> None:
    _fields(value, TOOL_CALL)
    if value.get("function") is None:
        raise _Wrong("is required", ".function")


def _content_part(value: Any) -> None:
    _fields(value, {"type": STRING}, required=("type",))
    if value["type"] == "text":
        _at(".text", STRING, value.get("text"))


_content_parts = _list_of(_content_part, "a string or a list of content parts")


def _content(value: Any) -> None:
    if not isinstance(value, str):
        _content_parts(value)


def _legacy_call(value: Any) -> None:
    """A legacy assistant `function_call`: arguments as a JSON string or an object."""
    _fields(value, {"name": STRING, "arguments": LEGACY_ARGUMENTS}, required=("name",))


MESSAGE = {
    "role": _one_of(ROLES),
    "content": _content,
    "name": STRING,
    "tool_calls": _list_of(_tool_call, "a list of tool calls"),
    "tool_call_id": STRING,
    "function_call": _legacy_call,
}


def _message(value: Any) -> None:
    _fields(value, MESSAGE)
    if value.get("role") is None:  # checked above when set
        _at(".role", MESSAGE["role"], None)


def _function_definition(value: Any) -> None:
    """A tool's `function`, or a legacy entry of `functions`."""
    _fields(value, FUNCTION, required=("name",))


def _tool(value: Any) -> None:
    _fields(value, {"type": STRING})
    if value.get("type", "function") == "function":
        _at(".function", _function_definition, value.get("function"))


def _named(value: Any) -> None:
    _fields(value, {"name": STRING}, required=("name",))


def _tool_choice(value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, dict) or value.get("type", "function") != "function":
        raise _Wrong("must be a string or {type: function, function: {name}}")
    _at(".function", _named, value.get("function"))


_strings = _list_of(STRING, "a string or a list of strings")


def _stop(value: Any) -> None:
    if not isinstance(value, str):
        _strings(value)


def _json_schema(value: Any) -> None:
    _fields(value, JSON_SCHEMA)


def _response_format(value: Any) -> None:
    _fields(value, RESPONSE_FORMAT, required=("type",))
    if value["type"] == "json_schema":
        _at(".json_schema", _json_schema, value.get("json_schema"))


def _function_choice(value: Any) -> None:
    if not isinstance(value, str):
        _named(value)


CHAT = {
    "model": STRING,
    "messages": _list_of(_message, "a list of messages"),
    "tools": _list_of(_tool, "a list of tools"),
    "tool_choice": _tool_choice,
    "functions": _list_of(_function_definition, "a list of functions"),
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
    """A 400 when objects and lists nest deeper than `limit` anywhere (walked a level at a time,
    without recursion)."""
    level = [body]
    depth = 1
    while level := [
        child
        for value in level
        for child in (value.values() if isinstance(value, dict) else value)
        if isinstance(child, (dict, list))
    ]:
        depth += 1
        if depth > limit:
            raise InvalidRequest(f"The request body nests deeper than {limit} levels")


def check_chat(body: dict[str, Any]) -> None:
    """Check a chat request's shape; InvalidRequest names the first wrong field."""
    check_depth(body)
    check_fields(body)


def check_fields(body: dict[str, Any]) -> None:
    """check_chat without the depth walk: for a body a front API built from a client's request
    whose depth it has checked (what it builds nests a few levels deeper at most, far within what
    the JSON encoder takes)."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    try:
        _fields(body, CHAT)
    except _Wrong as wrong:
        raise wrong.error() from None
