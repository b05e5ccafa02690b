"""OpenAI Responses: POST /v1/responses, stateless (Codex CLI, the Agents SDK, `use_responses_api`).

A front adapter: pure functions from a Responses request to the internal chat request and from the
internal answer, whole or streamed as blocks, back to a `response` object or the typed stream events.
Nothing is stored: each call carries its whole `input`, so `previous_response_id` is a clear 400.
Errors keep OpenAI's shape (the default); once a stream has started, a failure is `response.failed`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Blueprint, Response

from app.api.blocks import (
    BlockClosed,
    BlockDelta,
    BlockEvent,
    BlockOpened,
    Finished,
    Redact,
    close,
    copy_limits,
    new_id,
    serve,
    usage_or_estimate,
)
from app.api.chat import parse_json_object
from app.api.schema import check_depth, check_fields
from app.errors import InvalidRequest, ProxyError
from app.events import StreamFailed
from app.providers.shape import REASONING, TEXT, Answer, Block
from app.sse import KEEP_ALIVE, encode_event

bp = Blueprint("responses", __name__)

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text", "text", "refusal")
EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
ECHOED = ("instructions", "max_output_tokens", "metadata", "parallel_tool_calls", "reasoning", "store")
ECHOED += ("temperature", "text", "tool_choice", "tools", "top_p", "truncation", "user")


@dataclass(slots=True)
class ResponsesRequest:
    """What the answer needs besides the chat request: which tools are `custom` (their calls are
    answered as custom_tool_call), which built-in tools were ignored, and the fields to echo."""

    chat: dict[str, Any]
    custom_tools: set[str] = field(default_factory=set)
    ignored_tools: list[str] = field(default_factory=list)
    echo: dict[str, Any] = field(default_factory=dict)


# --- request -------------------------------------------------------------------------------------
def to_chat(body: dict[str, Any]) -> ResponsesRequest:
    """A Responses request as the internal chat request (it passes the chat schema the adapters
    trust); InvalidRequest for what we can't read."""
    check_depth(body)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if body.get("previous_response_id"):
        raise InvalidRequest(
            "previous_response_id is not supported: this gateway stores no responses. "
            "Send the whole conversation in 'input' on every call.",
            param="previous_response_id",
        )
    request = ResponsesRequest({"model": model, "messages": []})
    request.echo = {key: body[key] for key in ECHOED if key in body}
    messages = request.chat["messages"]
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        messages.append({"role": "user", "content": raw_input})
    elif isinstance(raw_input, list):
        for index, item in enumerate(raw_input):
            _item(item, f"input[{index}]", messages)
    else:
        raise InvalidRequest("'input' must be a string or a list of items.", param="input")
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequest("'input' has no message to answer.", param="input")
    _tools(body, request)
    _options(body, request.chat)
    check_fields(request.chat)
    return request


def _item(item: Any, where: str, messages: list[dict[str, Any]]) -> None:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object.", param=where)
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind == "message":
        role = ROLES.get(item["role"]) if isinstance(item.get("role"), str) else None
        if role is None:
            raise InvalidRequest(f"{where}.role must be one of {', '.join(ROLES)}.", param=f"{where}.role")
        messages.append({"role": role, "content": _content(item.get("content"), where, role)})
    elif kind in ("function_call", "custom_tool_call"):
        if kind == "function_call":
            arguments = item.get("arguments") if isinstance(item.get("arguments"), str) else "{}"
        else:
            arguments = orjson.dumps({"input": str(item.get("input") or "")}).decode()
        call = {
            "id": str(item.get("call_id") or item.get("id") or ""),
            "type": "function",
            "function": {"name": str(item.get("name") or ""), "arguments": arguments},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":  # one assistant turn: its text and calls
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        text = output if isinstance(output, str) else _text(output)
        messages.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": text})
    # reasoning items (the model's own, encrypted or summarised) and references are dropped


def _text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(
        p["text"]
        for p in parts
        if isinstance(p, dict) and p.get("type") in TEXT_PARTS and isinstance(p.get("text"), str)
    )


def _content(content: Any, where: str, role: str) -> str | list[dict[str, Any]]:
    """Message content: a string, or parts (text and images); text-only parts become a string."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{where}.content must be a string or a list of parts.", param=f"{where}.content"
        )
    images = [
        {
            "type": "image_url",
            "image_url": {"url": p["image_url"], **({"detail": p["detail"]} if p.get("detail") else {})},
        }
        for p in content
        if isinstance(p, dict) and p.get("type") == "input_image" and isinstance(p.get("image_url"), str)
    ]
    if not images or role != "user":
        return _text(content)
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") in TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "input_image" and images:
            parts.append(images.pop(0))
    return parts


def _tools(body: dict[str, Any], request: ResponsesRequest) -> None:
    """Function tools as they are, `namespace` tools flattened, `custom` tools as a function with
    one string argument `input`; built-in tools (web_search, ...) no free upstream runs: ignored."""
    tools: list[dict[str, Any]] = []
    pending = _list(body.get("tools"), "tools")
    while pending:
        tool = pending.pop(0)
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        if kind == "namespace":
            pending[:0] = _list(tool.get("tools"), "tools[].tools")
            continue
        name = tool.get("name")
        if kind not in ("function", "custom") or not isinstance(name, str) or not name:
            request.ignored_tools.append(str(kind))
            continue
        function: dict[str, Any] = {"name": name}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if kind == "custom":
            request.custom_tools.add(name)
            argument = {"type": "string", "description": custom_input_description(tool.get("format"))}
            function["parameters"] = {
                "type": "object",
                "properties": {"input": argument},
                "required": ["input"],
            }
        else:
            function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
        tools.append({"type": "function", "function": function})
    if not tools:
        return
    chat = request.chat
    chat["tools"] = tools
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required"):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") in ("function", "custom") and choice.get("name"):
        chat["tool_choice"] = {"type": "function", "function": {"name": str(choice["name"])}}
    if isinstance(body.get("parallel_tool_calls"), bool):
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"'{where}' must be a list.", param=where)
    return list(value)


def custom_input_description(fmt: Any) -> str:
    """What a custom tool's one string argument must look like: free text, or its grammar."""
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        syntax = fmt.get("syntax") if isinstance(fmt.get("syntax"), str) else "grammar"
        return f"The tool's input, which must match this {syntax} grammar:\n{fmt['definition']}"
    return "The tool's input, as free text."


def _options(body: dict[str, Any], chat: dict[str, Any]) -> None:
    copy_limits(body, "max_output_tokens", chat)
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    effort = EFFORTS.get(effort) if isinstance(effort, str) else None
    if effort:
        chat["reasoning_effort"] = effort
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest(
                "'text.format.schema' must be a JSON schema object.", param="text.format.schema"
            )
        schema = {"name": str(fmt.get("name") or "response"), "schema": fmt["schema"]}
        if isinstance(fmt.get("strict"), bool):
            schema["strict"] = fmt["strict"]
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    if stream:
        chat["stream"] = True


# --- answer --------------------------------------------------------------------------------------
def item_id(block: Block, custom_tools: set[str]) -> str:
    if block.kind == TEXT:
        return new_id("msg")
    if block.kind == REASONING:
        return new_id("rs")
    return new_id("ctc" if block.name in custom_tools else "fc")


def output_item(block: Block, item: str, custom_tools: set[str], done: bool = True) -> dict[str, Any]:
    """A block as an output item: whole (`done`) or as `response.output_item.added` shows it."""
    status = "completed" if done else "in_progress"
    if block.kind == TEXT:
        content = [text_part(block.text)] if done else []
        return {"type": "message", "id": item, "status": status, "role": "assistant", "content": content}
    if block.kind == REASONING:
        summary = [{"type": "summary_text", "text": block.text}] if done else []
        return {"type": "reasoning", "id": item, "summary": summary}
    if block.name in custom_tools:
        return {
            "type": "custom_tool_call",
            "id": item,
            "call_id": block.call_id,
            "name": block.name,
            "input": custom_input(block.text) if done else "",
            "status": status,
        }
    return {
        "type": "function_call",
        "id": item,
        "call_id": block.call_id,
        "name": block.name,
        "arguments": block.text if done else "",
        "status": status,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def custom_input(arguments: str) -> str:
    """The string a custom tool was called with (its one `input` argument)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments
    return str(value.get("input", "")) if isinstance(value, dict) else arguments


def usage_dict(answer: Answer, input_estimate: int) -> dict[str, Any]:
    usage = usage_or_estimate(answer, input_estimate)
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def response_object(
    request: ResponsesRequest,
    response_id: str,
    created_at: int,
    model: str,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    """The `response` object; request fields are echoed as the Responses API does."""
    echo = request.echo
    texts = [p["text"] for item in output if item["type"] == "message" for p in item["content"]]
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "model": model,
        "output": output,
        "output_text": "".join(texts),
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": echo.get("reasoning") or {"effort": None, "summary": None},
        "store": False,
        "temperature": echo.get("temperature"),
        "text": echo.get("text") or {"format": {"type": "text"}},
        "tool_choice": echo.get("tool_choice", "auto"),
        "tools": echo.get("tools", []),
        "top_p": echo.get("top_p"),
        "truncation": echo.get("truncation", "disabled"),
        "usage": usage,
        "user": echo.get("user"),
        "metadata": echo.get("metadata") or {},
    }


def final_status(answer: Answer) -> tuple[str, str | None]:
    """`completed`, or `incomplete` with its reason (the token limit, a content filter)."""
    reason = INCOMPLETE.get(answer.choice().finish_reason or "")
    return ("incomplete", reason) if reason else ("completed", None)


def response_from(
    request: ResponsesRequest, answer: Answer, response_id: str, created_at: int, input_estimate: int = 0
) -> dict[str, Any]:
    """A whole answer as a `response` object."""
    custom = request.custom_tools
    output = [output_item(b, item_id(b, custom), custom) for b in answer.choice().blocks]
    status, incomplete = final_status(answer)
    usage = usage_dict(answer, input_estimate)
    return response_object(
        request,
        response_id,
        created_at,
        answer.model,
        status=status,
        output=output,
        usage=usage,
        incomplete=incomplete,
    )


class _Events:
    """Typed stream events with a rising `sequence_number`."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return encode_event(kind, payload)


def response_events(
    events: Iterable[BlockEvent],
    request: ResponsesRequest,
    response_id: str,
    created_at: int,
    model: str,
    input_estimate: int,
    redact: Redact,
) -> Iterator[bytes]:
    """The Responses stream: created, in_progress, per block its added/delta/done events and the
    whole item in `response.output_item.done`, then `response.completed` (or `.incomplete`);
    a failure is `response.failed`, the last event. Heartbeats are SSE comments."""
    event = _Events()
    done: list[dict[str, Any]] = []  # the finished output items
    ids: list[str] = []
    custom = request.custom_tools

    def snapshot(status: str, **extra: Any) -> dict[str, Any]:
        return response_object(
            request, response_id, created_at, model, status=status, output=list(done), **extra
        )

    try:
        yield event("response.created", response=snapshot("in_progress"))
        yield event("response.in_progress", response=snapshot("in_progress"))
        for item in events:
            if isinstance(item, BlockDelta):
                yield from _delta(event, item, ids[item.index], custom)
            elif isinstance(item, BlockOpened):
                ids.append(item_id(item.block, custom))
                yield from _opened(event, item, ids[item.index], custom)
            elif isinstance(item, BlockClosed):
                whole = output_item(item.block, ids[item.index], custom)
                yield from _closed(event, item, whole)
                done.append(whole)
            elif isinstance(item, Finished):
                answer = item.answer
                model = answer.model or model
                status, incomplete = final_status(answer)
                final = snapshot(status, usage=usage_dict(answer, input_estimate), incomplete=incomplete)
                yield event(f"response.{status}", response=final)
            elif isinstance(item, StreamFailed):
                failure = failure_detail(item.error, redact)
                yield event("response.failed", response=snapshot("failed", error=failure))
                return
            else:
                yield KEEP_ALIVE
    finally:
        close(events)


def _opened(event: _Events, opened: BlockOpened, item: str, custom: set[str]) -> Iterator[bytes]:
    index = opened.index
    yield event(
        "response.output_item.added",
        output_index=index,
        item=output_item(opened.block, item, custom, done=False),
    )
    if opened.block.kind == TEXT:
        yield event(
            "response.content_part.added",
            item_id=item,
            output_index=index,
            content_index=0,
            part=text_part(""),
        )
    elif opened.block.kind == REASONING:
        part = {"type": "summary_text", "text": ""}
        yield event(
            "response.reasoning_summary_part.added",
            item_id=item,
            output_index=index,
            summary_index=0,
            part=part,
        )


def _delta(event: _Events, delta: BlockDelta, item: str, custom: set[str]) -> Iterator[bytes]:
    where = {"item_id": item, "output_index": delta.index}
    if delta.block.kind == TEXT:
        yield event("response.output_text.delta", **where, content_index=0, delta=delta.text, logprobs=[])
    elif delta.block.kind == REASONING:
        yield event("response.reasoning_summary_text.delta", **where, summary_index=0, delta=delta.text)
    elif delta.block.name not in custom:  # a custom tool's input is sent whole when it is done
        yield event("response.function_call_arguments.delta", **where, delta=delta.text)


def _closed(event: _Events, closed: BlockClosed, whole: dict[str, Any]) -> Iterator[bytes]:
    where = {"item_id": whole["id"], "output_index": closed.index}
    kind = whole["type"]
    if kind == "message":
        part = whole["content"][0]
        yield event("response.output_text.done", **where, content_index=0, text=part["text"], logprobs=[])
        yield event("response.content_part.done", **where, content_index=0, part=part)
    elif kind == "reasoning":
        part = whole["summary"][0]
        yield event("response.reasoning_summary_text.done", **where, summary_index=0, text=part["text"])
        yield event("response.reasoning_summary_part.done", **where, summary_index=0, part=part)
    elif kind == "custom_tool_call":
        yield event("response.custom_tool_call_input.delta", **where, delta=whole["input"])
        yield event("response.custom_tool_call_input.done", **where, input=whole["input"])
    else:
        yield event(
            "response.function_call_arguments.done", **where, name=whole["name"], arguments=whole["arguments"]
        )
    yield event("response.output_item.done", output_index=closed.index, item=whole)


def failure_detail(error: ProxyError, redact: Redact) -> dict[str, Any]:
    """The `error` of a failed response: OpenAI's code and the message, redacted."""
    return {"code": error.code or error.type, "message": redact(error.message)}


# --- route ---------------------------------------------------------------------------------------
@bp.post("/v1/responses")
@bp.post("/responses")
def create_response() -> Response:
    request = to_chat(parse_json_object())
    response_id, created_at = new_id("resp"), int(time.time())
    return serve(
        request.chat,
        request.ignored_tools,
        lambda answer, estimate: response_from(request, answer, response_id, created_at, estimate),
        lambda blocks, model, estimate, redact: response_events(
            blocks, request, response_id, created_at, model, estimate, redact
        ),
    )
