"""Anthropic Messages: POST /v1/messages (Claude Code adds `?beta=true`) and /v1/messages/count_tokens.

A front adapter: pure functions from a Messages request to the internal chat request (an OpenAI Chat
Completions body) and from the internal answer, whole or streamed as blocks, back to a Messages
answer or Anthropic's SSE events. The router, quotas, fallback and providers are the chat ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
    estimate_input_tokens,
    new_id,
    serve,
    usage_or_estimate,
)
from app.api.chat import parse_json_object
from app.api.render import error_shape, json_response, retry_after_header, services
from app.api.schema import check_depth, check_fields
from app.errors import InvalidRequest, ProxyError, ServiceUnavailable
from app.events import StreamFailed
from app.providers.shape import REASONING, TEXT, TOOL_CALL, Answer, Block
from app.sse import encode_event

bp = Blueprint("anthropic", __name__)

ROLES = ("user", "assistant", "system")
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}  # and `tool`: the one named
OVERLOADED = 529  # Anthropic's status when it cannot serve now: here, every candidate is broken
# Thinking budgets (tokens) up to these bounds ask for low, then medium reasoning effort; above: high.
EFFORT_BOUNDS = ((4096, "low"), (16384, "medium"))
PING = encode_event("ping", {"type": "ping"})


# --- request -------------------------------------------------------------------------------------
def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages request as the internal chat request. Raises InvalidRequest for what we can't
    read; fields that change nothing we serve (`metadata`, `top_k`, `cache_control`, betas) are
    dropped, and unknown fields are ignored. The result passes the chat schema the adapters trust."""
    check_depth(body)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model: Field required (a non-empty string)", param="model")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequest("messages: must be a non-empty list", param="messages")
    messages: list[dict[str, Any]] = []
    system = _text_of(body.get("system"), "system")
    if system:
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(raw_messages):
        messages += _message(message, f"messages.{index}")
    if all(m["role"] == "system" for m in messages):
        raise InvalidRequest("messages: nothing to answer (no user or assistant content)", param="messages")
    chat: dict[str, Any] = {"model": model, "messages": messages}
    copy_limits(body, "max_tokens", chat)
    stop = body.get("stop_sequences")
    if isinstance(stop, list) and stop:
        chat["stop"] = [s for s in stop if isinstance(s, str)]
    raw_tools = body.get("tools") or []
    if not isinstance(raw_tools, list):
        raise InvalidRequest("tools: must be a list", param="tools")
    tools = [_tool(t, f"tools.{i}") for i, t in enumerate(raw_tools) if _is_custom_tool(t)]
    if tools:
        chat["tools"] = tools
        _tool_choice(body.get("tool_choice"), chat)
    effort = _reasoning_effort(body.get("thinking"))
    if effort:
        chat["reasoning_effort"] = effort
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean", param="stream")
    if stream:
        chat["stream"] = True
    check_fields(chat)
    return chat


def _text_of(value: Any, where: str) -> str:
    """A string, or the text of a list of blocks (a system prompt, a tool result, a system message)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(b["text"] for b in value if isinstance(b, dict) and isinstance(b.get("text"), str))
    raise InvalidRequest(f"{where}: must be a string or a list of text blocks", param=where)


def _message(message: Any, where: str) -> list[dict[str, Any]]:
    """One Messages message as one or more chat messages (tool results become `tool` messages)."""
    if not isinstance(message, dict):
        raise InvalidRequest(f"{where}: must be an object", param=where)
    role = message.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"{where}.role: must be one of {', '.join(ROLES)}, got {role!r}", param=where)
    content = message.get("content")
    if role == "system":
        return [{"role": "system", "content": _text_of(content, f"{where}.content")}]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content: must be a string or a list of blocks", param=where)
    blocks = [b for b in content if isinstance(b, dict)]
    if role == "assistant":
        return [_assistant(blocks)]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts += _image(block.get("source"), f"{where}.content")
        elif kind == "tool_result":
            result = block.get("content")
            text = _text_of(result, f"{where}.content")
            for part in result if isinstance(result, list) else ():  # its images follow as the user's
                if isinstance(part, dict) and part.get("type") == "image":
                    parts += _image(part.get("source"), f"{where}.content")
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": text})
        # thinking, documents and any other block carry nothing the upstream can use
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        body: str | list[dict[str, Any]] = "\n".join(p["text"] for p in parts) if only_text else parts
        out.append({"role": "user", "content": body})
    return out


def _assistant(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """An assistant turn: its text, and its tool_use blocks as tool calls. Thinking is dropped."""
    text = "\n".join(b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str))
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [
        {
            "id": str(b.get("id") or ""),
            "type": "function",
            "function": {
                "name": str(b.get("name") or ""),
                "arguments": orjson.dumps(b.get("input") or {}).decode(),
            },
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    if calls:
        message["tool_calls"] = calls
    elif not text:
        message["content"] = ""
    return message


def _image(source: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(source, dict):
        raise InvalidRequest(f"{where}: an image block needs a source", param=where)
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise InvalidRequest(f"{where}: image source must be base64 or url", param=where)
    return [{"type": "image_url", "image_url": {"url": url}}]


def _is_custom_tool(tool: Any) -> bool:
    """Client tools have an input_schema; Anthropic's server tools (web_search_..., bash_...) don't,
    and no free upstream runs them."""
    return isinstance(tool, dict) and "input_schema" in tool


def server_tools(body: dict[str, Any]) -> list[str]:
    """The names of the server tools a request offered, which the answer goes without."""
    tools = body.get("tools")
    offered = tools if isinstance(tools, list) else []
    return [
        str(t.get("name") or t.get("type")) for t in offered if isinstance(t, dict) and not _is_custom_tool(t)
    ]


def _tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where}.name: required", param=where)
    function: dict[str, Any] = {"name": name, "parameters": tool.get("input_schema") or {"type": "object"}}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        return
    kind = str(choice.get("type"))
    if kind in TOOL_CHOICES:
        chat["tool_choice"] = TOOL_CHOICES[kind]
    elif kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": str(choice.get("name") or "")}}
    if choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def _reasoning_effort(thinking: Any) -> str | None:
    """`thinking: {type: enabled, budget_tokens}` as an effort; `adaptive` leaves it to the model."""
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int):
        return "medium"
    return next((effort for bound, effort in EFFORT_BOUNDS if budget <= bound), "high")


# --- answer --------------------------------------------------------------------------------------
def content_block(block: Block, whole: bool) -> dict[str, Any]:
    """A block as Anthropic writes it: whole (answers) or empty (content_block_start)."""
    if block.kind == TOOL_CALL:
        return {
            "type": "tool_use",
            "id": block.call_id,
            "name": block.name,
            "input": _input(block) if whole else {},
        }
    if block.kind == REASONING:
        return {"type": "thinking", "thinking": block.text if whole else "", "signature": ""}
    return {"type": "text", "text": block.text if whole else ""}


def _input(block: Block) -> Any:
    try:
        value = orjson.loads(block.text or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def usage_dict(answer: Answer, input_estimate: int) -> dict[str, int]:
    usage = usage_or_estimate(answer, input_estimate)
    return {
        "input_tokens": usage.input_tokens - usage.cached_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def stop_reason(finish_reason: str | None) -> str:
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def message_from(answer: Answer, message_id: str, input_estimate: int = 0) -> dict[str, Any]:
    """A whole answer as an Anthropic `message`."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [content_block(b, whole=True) for b in answer.choice().blocks],
        "stop_reason": stop_reason(answer.choice().finish_reason),
        "stop_sequence": None,
        "usage": usage_dict(answer, input_estimate),
    }


def message_events(
    events: Iterable[BlockEvent], message_id: str, model: str, input_estimate: int, redact: Redact
) -> Iterator[bytes]:
    """Anthropic's stream: message_start, ping, the blocks (start, deltas, stop), message_delta,
    message_stop; a heartbeat is a ping and a failure an `error` event, the last one."""
    message = message_from(Answer(model=model), message_id, input_estimate)
    message.update(stop_reason=None, usage={"input_tokens": input_estimate, "output_tokens": 0})
    try:
        yield encode_event("message_start", {"type": "message_start", "message": message})
        yield PING
        for event in events:
            if isinstance(event, BlockDelta):
                delta = {"type": "content_block_delta", "index": event.index, "delta": _delta(event)}
                yield encode_event("content_block_delta", delta)
            elif isinstance(event, BlockOpened):
                block = content_block(event.block, whole=False)
                start = {"type": "content_block_start", "index": event.index, "content_block": block}
                yield encode_event("content_block_start", start)
            elif isinstance(event, BlockClosed):
                yield encode_event("content_block_stop", {"type": "content_block_stop", "index": event.index})
            elif isinstance(event, Finished):
                answer = event.answer
                stop = {"stop_reason": stop_reason(answer.choice().finish_reason), "stop_sequence": None}
                usage = usage_dict(answer, input_estimate)
                yield encode_event("message_delta", {"type": "message_delta", "delta": stop, "usage": usage})
                yield encode_event("message_stop", {"type": "message_stop"})
            elif isinstance(event, StreamFailed):
                yield encode_event("error", error_body(event.error, redact)[1])
                return
            else:
                yield PING
    finally:
        close(events)


def _delta(event: BlockDelta) -> dict[str, str]:
    if event.block.kind == TEXT:
        return {"type": "text_delta", "text": event.text}
    if event.block.kind == REASONING:
        return {"type": "thinking_delta", "thinking": event.text}
    return {"type": "input_json_delta", "partial_json": event.text}


# --- errors --------------------------------------------------------------------------------------
def error_body(error: ProxyError, redact: Redact) -> tuple[int, dict[str, Any]]:
    """(status, body) in Anthropic's shape: 529 overloaded_error when every candidate is broken,
    api_error for the proxy's and upstreams' other failures."""
    if isinstance(error, ServiceUnavailable):
        status, kind = OVERLOADED, "overloaded_error"
    else:
        status = error.status
        kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return status, {"type": "error", "error": {"type": kind, "message": redact(error.message)}}


def error_response(error: ProxyError) -> Response:
    status, body = error_body(error, services().redactor)
    return json_response(body, status, retry_after_header(error))


error_shape(bp, error_response)


# --- routes --------------------------------------------------------------------------------------
@bp.post("/v1/messages")
@bp.post("/messages")
def messages() -> Response:
    """`?beta=true`, `anthropic-version` and `anthropic-beta` change nothing we serve."""
    body = parse_json_object()
    chat = to_chat(body)
    message_id = new_id("msg")
    return serve(
        chat,
        server_tools(body),
        lambda answer, estimate: message_from(answer, message_id, estimate),
        lambda blocks, model, estimate, redact: message_events(blocks, message_id, model, estimate, redact),
    )


@bp.post("/v1/messages/count_tokens")
@bp.post("/messages/count_tokens")
def count_tokens() -> Response:
    body = parse_json_object()
    body.pop("stream", None)
    return json_response({"input_tokens": estimate_input_tokens(to_chat(body))})
