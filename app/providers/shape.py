"""OpenAI's Chat Completions shape, in one place: what every adapter reads from a request and writes back.

- request side: `max_tokens` (one rule), `renamed_params`, `content_text`, `function_tools`, `json_format`;
- answers: `Answer`, the one accumulator of an answer (per choice its reasoning, text and tool-call
  `Block`s in order, the finish reason; the usage): adapters fill it from an upstream's answer and render
  the `chat.completion`, the front APIs gather it back from a `chat.completion` or its chunks;
  `ChunkWriter` writes the `chat.completion.chunk`s of a stream with any number of choices;
  `tool_call` is the one tool-call normaliser, `usage` the one usage builder;
  `check_completion` / `check_chunk` validate an OpenAI-shaped answer we pass through as it is;
- errors: `error_for_status` (an upstream HTTP status -> our error, with the key's cooldown class that
  the status alone says; adapters pass a finer one), `openai_error_message` (the error envelope),
  `answer_error` (an `error` object inside a 200), `incomplete_stream`, `malformed`;
- waiting: `retry_after_seconds` (headers), `seconds_until_midnight`, `seconds_until_epoch_ms`.

Anything wrong with what an upstream sent raises `MalformedAnswer` (a ValueError); the transport's error
boundary turns it, like any other TypeError/LookupError/ValueError met while translating, into
`malformed(model)`: a retryable UpstreamError that names the model and never the body.
"""

from __future__ import annotations

import email.utils
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo
from typing import Any

import orjson

from app.errors import (
    ProxyError,
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
)
from app.routing.cooldown import AUTH, CREDIT, RATE, Cooldown

# what translating a malformed upstream answer may raise (AttributeError: a method of the wrong type)
TRANSLATION_ERRORS = (LookupError, TypeError, ValueError, AttributeError)


class MalformedAnswer(ValueError):
    """An upstream answer or event that does not have the shape its API promises."""


def malformed(model_name: str, stream: bool = False, cause: BaseException | None = None) -> UpstreamError:
    """The error for an answer (or stream event) we could not translate. It says what was wrong only
    in our own words (a field name, "not JSON"): the body is never quoted."""
    what = "stream event" if stream else "answer"
    if isinstance(cause, MalformedAnswer):
        what += f" ({cause})"
    elif isinstance(cause, orjson.JSONDecodeError):
        what += " (not JSON)"
    return UpstreamError(f"Upstream for model {model_name} sent a malformed {what}")


def incomplete_stream(model_name: str) -> UpstreamError:
    return UpstreamError(f"Upstream stream for model {model_name} ended before it was complete")


def new_id(prefix: str = "chatcmpl-") -> str:
    """A fresh id: `chatcmpl-…` for answers, `call_…` for tool calls."""
    return prefix + uuid.uuid4().hex


# --- request ---------------------------------------------------------------------------------


def max_tokens(body: Mapping[str, Any]) -> Any:
    """The answer's token budget: `max_completion_tokens`, else the legacy `max_tokens`."""
    value = body.get("max_completion_tokens")
    return body.get("max_tokens") if value is None else value


def renamed_params(body: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The request's parameters that are set, renamed by `names` (OpenAI's -> the upstream's);
    `max_tokens` is read by `max_tokens()`."""
    values = {**body, "max_tokens": max_tokens(body)}
    return {theirs: values[ours] for ours, theirs in names.items() if values.get(ours) is not None}


def content_text(content: Any) -> str:
    """The text of an OpenAI message `content`: the string, or its text parts joined by newlines."""
    if isinstance(content, list):
        return "\n".join(part.get("text") or "" for part in content if part.get("type") == "text")
    return content or ""


def function_tools(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The request's function tools (name, description, parameters only) and its `tool_choice` as
    "auto" | "none" | "required" | None; a named function becomes "required" over that tool alone,
    for upstreams that cannot name one."""
    tools = []
    for tool in body.get("tools") or ():
        if tool.get("type", "function") != "function":
            continue  # the schema lets other types through for upstreams that know them
        function = tool["function"]
        keep = {k: function[k] for k in ("name", "description", "parameters") if k in function}
        tools.append({"type": "function", "function": keep})
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        return [t for t in tools if t["function"]["name"] == name], "required"
    return tools, choice if choice in ("auto", "none", "required") else None


def json_format(body: Mapping[str, Any]) -> tuple[str | None, Any]:
    """The request's `response_format` as ("json_object" | "json_schema" | None, its JSON schema)."""
    response_format = body.get("response_format")
    kind = response_format["type"] if response_format else None
    if kind == "json_schema":
        return kind, response_format["json_schema"].get("schema")
    return (kind, None) if kind == "json_object" else (None, None)


# --- answers ---------------------------------------------------------------------------------


def expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """`value` if it is of `kind`, else MalformedAnswer naming the field (never its value)."""
    if type(value) is kind:  # the common case, and never a bool where a number is wanted
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise MalformedAnswer(f"{what} has the wrong type")
    return value


def optional_text(value: Any, what: str) -> str:
    """A text field that may be missing or null ("" then)."""
    return "" if value is None else expect(value, str, what)


def arguments_text(arguments: Any, missing: str = "{}") -> str:
    """Tool-call arguments as OpenAI's JSON string (an object is serialised; None -> `missing`)."""
    if arguments is None:
        return missing
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments).decode()


def tool_call(
    name: Any, arguments: Any, call_id: Any = None, *, missing: str = "{}", **extra: Any
) -> dict[str, Any]:
    """The one OpenAI tool call: a fresh `call_…` id when the upstream gave none, arguments as a JSON
    string; `extra` rides along (e.g. Gemini's `extra_content`)."""
    return {
        "id": expect(call_id, str, "tool call id") if call_id else new_id("call_"),
        "type": "function",
        "function": {
            "name": optional_text(name, "tool call name"),
            "arguments": arguments_text(arguments, missing),
        },
        **extra,
    }


def count(value: Any, what: str = "token count") -> int:
    """A token count: missing -> 0, a negative one -> 0; anything but a number is malformed."""
    if value is None:
        return 0
    return max(int(expect(value, (int, float), what)), 0)


def usage(
    prompt: Any,
    completion: Any,
    *,
    cached: Any = None,
    reasoning: Any = None,
    total: Any = None,
) -> dict[str, Any]:
    """OpenAI usage from the upstream's counts (validated; `total` defaults to the sum)."""
    prompt_tokens, completion_tokens = count(prompt), count(completion)
    cached_tokens, reasoning_tokens = count(cached), count(reasoning)
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": count(total) or prompt_tokens + completion_tokens,
    }
    if cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return out


REASONING, TEXT, TOOL_CALL = "reasoning", "text", "tool_call"
TOOL_CALL_FIELDS = ("index", "id", "type", "function")  # what a Block reads of a call; the rest is `extra`


class Block:
    """One piece of an answer's content, in the order it came: reasoning, text or a tool call."""

    __slots__ = ("call_id", "extra", "kind", "name", "parts")

    def __init__(
        self, kind: str, call_id: str = "", name: str = "", extra: dict[str, Any] | None = None
    ) -> None:
        self.kind = kind  # REASONING, TEXT or TOOL_CALL
        self.call_id = call_id
        self.name = name
        self.extra = extra  # a tool call's other fields, e.g. Gemini's `extra_content`
        self.parts: list[str] = []  # joined when read: a long stream is not copied at every piece

    @property
    def text(self) -> str:
        """The text, the reasoning, or a tool call's arguments (JSON text)."""
        parts = self.parts
        if len(parts) > 1:
            parts[:] = ["".join(parts)]
        return parts[0] if parts else ""

    def tool_call(self) -> dict[str, Any]:
        call = {
            "id": self.call_id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.text},
        }
        if self.extra:
            call.update(self.extra)
        return call


Piece = tuple[Block, str]  # what one add_* call gathered: the block it went into, and the new text


class Output:
    """One choice of an answer as it is gathered: its blocks in order (text after text, or reasoning
    after reasoning, joins the same block) and its finish reason."""

    __slots__ = ("blocks", "calls", "finish_reason")

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.calls: dict[int, Block] = {}  # the tool calls by their index (a stream sends them in pieces)
        self.finish_reason: str | None = None

    @property
    def text(self) -> str:
        return self._joined(TEXT)

    @property
    def reasoning(self) -> str:
        return self._joined(REASONING)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return [block.tool_call() for block in self.calls.values()]

    def _joined(self, kind: str) -> str:
        return "".join(block.text for block in self.blocks if block.kind == kind)

    def add_text(self, text: Any) -> Piece | None:
        return self._add(TEXT, optional_text(text, "content"))

    def add_reasoning(self, text: Any) -> Piece | None:
        return self._add(REASONING, optional_text(text, "reasoning"))

    def _add(self, kind: str, text: str) -> Piece | None:
        if not text:
            return None
        block = self.blocks[-1] if self.blocks else None
        if block is None or block.kind != kind:
            block = Block(kind)
            self.blocks.append(block)
        block.parts.append(text)
        return block, text

    def add_tool_call(self, call: Mapping[str, Any]) -> Piece | None:
        """A whole OpenAI tool call (`tool_call()` makes one), or a streamed piece of one: pieces with
        the same `index` are one call, whose id and name come with its first piece."""
        index = expect(call.get("index", len(self.calls)), int, "tool call index")
        function = expect(call.get("function") or {}, dict, "tool call function")
        arguments = optional_text(function.get("arguments"), "tool call arguments")
        block = self.calls.get(index)
        if block is None:
            call_id = call.get("id")
            block = self.calls[index] = Block(
                TOOL_CALL,
                call_id=expect(call_id, str, "tool call id") if call_id else new_id("call_"),
                name=optional_text(function.get("name"), "tool call name"),
                extra={k: v for k, v in call.items() if k not in TOOL_CALL_FIELDS} or None,
            )
            self.blocks.append(block)
        elif not arguments:
            return None
        if arguments:
            block.parts.append(arguments)
        return block, arguments

    def add_delta(self, delta: Mapping[str, Any]) -> list[Piece]:
        """A `message` or a streamed `delta`: its reasoning (ours, else OpenRouter's `reasoning`),
        text and tool calls, in that order."""
        if not isinstance(delta, dict):
            raise MalformedAnswer("message has the wrong type")
        pieces = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and (piece := self.add_reasoning(reasoning)):
            pieces.append(piece)
        content = delta.get("content")
        if content and (piece := self.add_text(content)):
            pieces.append(piece)
        for call in delta.get("tool_calls") or ():
            if piece := self.add_tool_call(call):
                pieces.append(piece)
        return pieces

    def message(self) -> dict[str, Any]:
        """The `message`: content is null only beside tool calls with no text."""
        text, reasoning, tool_calls = self.text, self.reasoning, self.tool_calls
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
        if reasoning:
            message["reasoning_content"] = reasoning
        if tool_calls:
            message["tool_calls"] = tool_calls
        return message


class Answer:
    """The one accumulator of an answer: built by the provider adapters from an upstream's answer and
    rendered as an OpenAI `chat.completion`; gathered back from a `chat.completion` or its chunks by the
    front APIs that render it in their own words."""

    __slots__ = ("choices", "created", "id", "model", "usage")

    def __init__(self, answer_id: str | None = None, model: str = "", created: int | None = None) -> None:
        self.id = answer_id or new_id()
        self.model = model
        self.created = created or int(time.time())
        self.choices: dict[int, Output] = {}
        self.usage: dict[str, Any] | None = None

    @classmethod
    def from_completion(cls, body: Mapping[str, Any]) -> Answer:
        """A checked `chat.completion` (an adapter's, or an upstream's passed through) gathered back."""
        answer = cls(body.get("id"), body.get("model") or "", body.get("created"))
        for position, choice in enumerate(body.get("choices") or ()):
            output = answer.choice(choice.get("index", position))
            output.add_delta(choice.get("message") or {})
            output.finish_reason = choice.get("finish_reason")
        answer.usage = body.get("usage")
        return answer

    def add_chunk(self, chunk: Mapping[str, Any]) -> list[tuple[int, Block, str]]:
        """A checked `chat.completion.chunk` gathered in; returns each piece with its choice's index."""
        if chunk.get("model"):
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        pieces = []
        for position, choice in enumerate(chunk.get("choices") or ()):
            index = choice.get("index", position)
            output = self.choice(index)
            pieces += [(index, block, text) for block, text in output.add_delta(choice.get("delta") or {})]
            if choice.get("finish_reason"):
                output.finish_reason = choice["finish_reason"]
        return pieces

    def choice(self, index: Any = 0) -> Output:
        index = expect(index, int, "choice index")
        output = self.choices.get(index)
        if output is None:
            output = self.choices[index] = Output()
        return output

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": index, "message": output.message(), "finish_reason": output.finish_reason or "stop"}
                for index, output in sorted(self.choices.items())
            ],
        }
        if self.usage:
            body["usage"] = self.usage
        return body


class ChunkWriter:
    """Writes the `chat.completion.chunk`s of one stream, any number of choices: each choice's first delta
    carries the role; `complete` tells whether every choice that started has finished."""

    __slots__ = ("created", "finished", "id", "model", "started")

    def __init__(self, chunk_id: str | None = None, model: str = "") -> None:
        self.id = chunk_id or new_id()
        self.model = model
        self.created = int(time.time())
        self.started: set[int] = set()
        self.finished: set[int] = set()

    @property
    def complete(self) -> bool:
        return bool(self.finished) and self.started <= self.finished

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def choice(
        self, delta: dict[str, Any], finish_reason: str | None = None, index: int = 0
    ) -> dict[str, Any]:
        """One choice entry of a chunk (validated); several make a multi-choice chunk."""
        _check_delta(delta)
        if finish_reason is not None:
            expect(finish_reason, str, "finish_reason")
        if index not in self.started:
            self.started.add(index)
            delta = {"role": "assistant", **delta}
        if finish_reason:
            self.finished.add(index)
        return {"index": index, "delta": delta, "finish_reason": finish_reason}

    def delta(
        self, delta: dict[str, Any], finish_reason: str | None = None, index: int = 0
    ) -> dict[str, Any]:
        """A chunk of one choice."""
        return self.chunk([self.choice(delta, finish_reason, index)])

    def tool_calls(self, calls: list[dict[str, Any]], index: int = 0) -> dict[str, Any]:
        return self.delta({"tool_calls": calls}, index=index)

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        chunk = self.chunk([])
        chunk["usage"] = usage
        return chunk


# --- validation of what passes through --------------------------------------------------------


def _check_tool_calls(calls: Any, where: str, streamed: bool) -> None:
    for call in expect(calls, list, f"{where}.tool_calls"):
        expect(call, dict, f"{where}.tool_calls[]")
        if streamed:
            expect(call.get("index"), int, "tool call index")
        if not streamed or call.get("id") is not None:
            expect(call.get("id"), str, "tool call id")
        function = call.get("function")
        if function is None and streamed:
            continue
        expect(function, dict, "tool call function")
        for field in ("name", "arguments"):
            if not streamed or function.get(field) is not None:
                expect(function.get(field), str, f"tool call {field}")


def _check_message(message: Any, where: str, streamed: bool) -> None:
    expect(message, dict, where)
    for field in ("role", "content", "reasoning_content", "reasoning", "refusal"):
        value = message.get(field)
        if value is not None and type(value) is not str:  # the field's name only when it is wrong
            expect(value, str, f"{where}.{field}")
    if message.get("tool_calls") is not None:
        _check_tool_calls(message["tool_calls"], where, streamed)


def _check_delta(delta: Any) -> None:
    _check_message(delta, "delta", streamed=True)


def _check_choices(body: Any, key: str) -> None:
    expect(body, dict, "answer")
    for field, kind in (("id", str), ("model", str), ("created", int)):
        if body.get(field) is not None:
            expect(body[field], kind, field)
    for choice in expect(body.get("choices"), list, "choices"):
        expect(choice, dict, "choice")
        if choice.get("index") is not None:
            expect(choice["index"], int, "choice index")
        if choice.get("finish_reason") is not None:
            expect(choice["finish_reason"], str, "finish_reason")
        _check_message(choice.get(key), key, streamed=key == "delta")
    if body.get("usage") is not None:
        expect(body["usage"], dict, "usage")
        for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
            tokens = body["usage"].get(field)
            if tokens is not None and type(tokens) is not int:
                expect(tokens, int, f"usage.{field}")


def check_completion(body: Any) -> dict[str, Any]:
    """An OpenAI `chat.completion` from upstream, validated where clients and the router read it."""
    _check_choices(body, "message")
    if not body["choices"]:
        raise MalformedAnswer("the answer has no choices")
    return body


def check_chunk(chunk: Any) -> dict[str, Any]:
    """An OpenAI `chat.completion.chunk` from upstream, validated the same way."""
    _check_choices(chunk, "delta")
    return chunk


# --- errors ----------------------------------------------------------------------------------


def openai_error_message(body: bytes) -> str:
    """The message of an OpenAI-style error envelope (also a bare list of them, as Gemini's compat)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip()
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        errors = data.get("errors")  # Cloudflare's envelope
        if isinstance(errors, list) and errors and isinstance(errors[0], dict) and errors[0].get("message"):
            return str(errors[0]["message"])
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if data.get("message"):
            return str(data["message"])
    return ""


def error_for_status(
    status: int,
    message: str,
    model_name: str,
    headers: Mapping[str, str] | None = None,
    retry_after: float | None = None,
    cooldown: Cooldown | None = None,
) -> ProxyError:
    """Map an upstream HTTP status to our error classes. A failure that is the key's carries a
    cooldown: `cooldown` when the adapter decided one, else what the status says (`status_cooldown`)."""
    if status == 429 and retry_after is None and headers is not None:
        retry_after = retry_after_seconds(headers)
    error = _error_for_status(status, message, model_name, retry_after)
    error.cooldown = cooldown if cooldown is not None else status_cooldown(status, retry_after)
    return error


def status_cooldown(status: int, retry_after: float | None = None) -> Cooldown | None:
    """The key's cooldown class a status alone says: 401/403 auth, 402 credit, 429 rate."""
    if status in (401, 403):
        return Cooldown(AUTH, None, f"upstream {status}: key rejected")
    if status == 402:
        return Cooldown(CREDIT, None, "upstream 402: out of credit")
    if status == 429:
        return Cooldown(RATE, retry_after, "upstream 429: rate limited")
    return None


def _error_for_status(status: int, message: str, model_name: str, retry_after: float | None) -> ProxyError:
    detail = f": {message}" if message else ""
    if status in (401, 403):
        return UpstreamAuthError(f"The proxy's credentials for model {model_name} were rejected")
    if status == 402:
        return UpstreamError(
            f"Model {model_name} is out of credit upstream{detail}", code="upstream_no_credit"
        )
    if status == 429:
        return RateLimited(f"Model {model_name} is rate limited upstream{detail}", retry_after=retry_after)
    if status in (408, 504):
        return UpstreamTimeout(f"Upstream for model {model_name} timed out{detail}")
    if 400 <= status < 500:
        return UpstreamBadRequest(message or f"Upstream rejected the request for model {model_name}")
    return UpstreamError(f"Upstream for model {model_name} failed with HTTP {status}{detail}")


def answer_error(error: Any, model_name: str, retry_after: float | None = None) -> ProxyError:
    """An `error` object inside a 200 answer or stream: its numeric `code` is the HTTP status it means."""
    if isinstance(error, dict):
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else 502
        message = error.get("message")
        return error_for_status(
            status, message if isinstance(message, str) else "", model_name, retry_after=retry_after
        )
    detail = f": {error[:300]}" if isinstance(error, str) and error else ""
    return UpstreamError(f"Upstream for model {model_name} failed mid-answer{detail}")


# --- waiting ---------------------------------------------------------------------------------


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def seconds_until_midnight(zone: tzinfo, now: float | None = None) -> float:
    """Seconds until the next midnight in `zone` (when daily quotas reset)."""
    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, zone).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=zone) + timedelta(days=1)
    return midnight.timestamp() - now


def seconds_until_epoch_ms(reset: Any, now: float | None = None) -> float | None:
    """Seconds until a reset given in epoch milliseconds (None when it is not a number)."""
    try:
        return max(float(reset) / 1000.0 - (time.time() if now is None else now), 0.0)
    except (TypeError, ValueError):
        return None
