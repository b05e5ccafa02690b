"""Cohere's v2 Chat API (`https://api.cohere.com/v2/chat`).

OpenAI messages map almost one to one; sampling names differ (`p`, `stop_sequences`), and the text an
assistant turn carries beside its tool calls is Cohere's `tool_plan` (and comes back as `content`).
Answers hold text parts, uppercase finish reasons and two token counts; streams are typed events
(`event:` + `data:`). A Compatibility API URL (`…/compatibility/v1/chat/completions`) takes the OpenAI
path instead. Errors are `{"id", "message"}`, which the base class's default already reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import UpstreamError, UpstreamTimeout
from app.http import SessionPool
from app.providers.base import (
    ChunkWriter,
    HttpProvider,
    UpstreamRequest,
    bearer_headers,
    chat_completion,
    content_text,
    function_tools,
    json_format,
    openai_usage,
    renamed_params,
)
from app.sse import SSEEvent

FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
# OpenAI name -> Cohere name, copied when set
PARAMS = {
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "p",
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}


def build_payload(body: dict[str, Any], upstream_model: str, stream: bool) -> dict[str, Any]:
    """OpenAI chat request -> Cohere v2 chat request."""
    payload: dict[str, Any] = {
        "model": upstream_model,
        "messages": [_message(m) for m in body.get("messages") or ()],
        "stream": stream,
    }
    payload.update(renamed_params(body, PARAMS))
    stop = body.get("stop")
    if stop:
        payload["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = _response_format(body)
    if response_format:
        payload["response_format"] = response_format
    tools, choice = function_tools(body)
    if tools:
        payload["tools"] = tools
    if choice in ("none", "required"):
        payload["tool_choice"] = choice.upper()
    return payload


def _message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    content = message.get("content")
    if role == "developer":
        return {"role": "system", "content": content}
    if role == "tool":
        return {"role": "tool", "tool_call_id": message.get("tool_call_id"), "content": content or ""}
    if role != "assistant":
        return {"role": role, "content": content}
    text = content_text(content)
    calls = message.get("tool_calls")
    if not calls:
        return {"role": "assistant", "content": text}
    out: dict[str, Any] = {
        "role": "assistant",
        "tool_calls": [{"id": c.get("id"), "type": "function", "function": c.get("function")} for c in calls],
    }
    if text:
        out["tool_plan"] = text
    return out


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """Cohere spells a JSON schema as json_object with `json_schema`."""
    kind, schema = json_format(body)
    if kind is None:
        return None
    return {"type": "json_object", "json_schema": schema} if schema else {"type": "json_object"}


def parse_completion(data: Any, model_name: str) -> dict[str, Any]:
    """Cohere v2 chat answer -> OpenAI chat.completion."""
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise UpstreamError(f"Upstream for model {model_name} sent an answer without a message")
    finish_reason = _finish_reason(data.get("finish_reason"), model_name)
    message = data["message"]
    text, thinking = _content(message.get("content"))
    out: dict[str, Any] = {"content": text}
    calls = message.get("tool_calls")
    if calls:
        out["content"] = text or message.get("tool_plan") or None
        out["tool_calls"] = [_tool_call(c) for c in calls]
    if thinking:
        out["reasoning_content"] = thinking
    return chat_completion(
        str(data.get("id") or ""), model_name, out, finish_reason, _usage(data.get("usage"))
    )


def _content(parts: Any) -> tuple[str, str]:
    """(text, thinking) of Cohere's content parts."""
    text, thinking = [], []
    for part in parts or ():
        if part.get("type") == "text":
            text.append(part.get("text") or "")
        elif part.get("type") == "thinking":
            thinking.append(part.get("thinking") or "")
    return "".join(text), "".join(thinking)


def _tool_call(call: dict[str, Any], no_arguments: str = "{}") -> dict[str, Any]:
    """Cohere's tool call is OpenAI's already (JSON-string arguments); fill what may be missing."""
    function = call.get("function") or {}
    return {
        "id": call.get("id") or "",
        "type": "function",
        "function": {
            "name": function.get("name") or "",
            "arguments": function.get("arguments") or no_arguments,
        },
    }


def _finish_reason(reason: Any, model_name: str) -> str:
    """Cohere's reason -> OpenAI's; a failed or timed-out generation is an upstream failure."""
    if reason == "ERROR":
        raise UpstreamError(f"Upstream for model {model_name} failed while generating")
    if reason == "TIMEOUT":
        raise UpstreamTimeout(f"Upstream for model {model_name} timed out while generating")
    return FINISH_REASONS.get(reason, "stop")


def _usage(usage: Any) -> dict[str, Any] | None:
    """OpenAI usage from `tokens` (what the model processed, which `cached_tokens` is part of),
    falling back to `billed_units` (the smaller count Cohere bills)."""
    if not isinstance(usage, dict):
        return None
    counts = usage.get("tokens") or usage.get("billed_units")
    if not isinstance(counts, dict):
        return None
    return openai_usage(
        int(counts.get("input_tokens") or 0),
        int(counts.get("output_tokens") or 0),
        int(usage.get("cached_tokens") or 0),
    )


def parse_chunks(events: Iterable[SSEEvent], model_name: str) -> Iterator[dict[str, Any]]:
    """Cohere's typed stream events -> OpenAI chunks, ending with a usage chunk."""
    writer = ChunkWriter("", model_name)
    tool_index: dict[Any, int] = {}  # Cohere's index -> ours, in order of appearance
    finished = False
    for event in events:
        if event.data == b"[DONE]":
            break
        data = orjson.loads(event.data)
        kind = data.get("type") or event.event
        delta = data.get("delta") or {}
        message = delta.get("message") or {}
        if kind == "message-start":
            writer.id = str(data.get("id") or "")
            yield writer.delta({"content": ""})
        elif kind == "content-delta":
            content = message.get("content") or {}
            if content.get("thinking"):
                yield writer.delta({"reasoning_content": content["thinking"]})
            elif content.get("text"):
                yield writer.delta({"content": content["text"]})
        elif kind == "tool-plan-delta" and message.get("tool_plan"):
            yield writer.delta({"content": message["tool_plan"]})
        elif kind == "tool-call-start":
            index = tool_index.setdefault(data.get("index"), len(tool_index))
            call = _tool_call(message.get("tool_calls") or {}, no_arguments="")
            yield writer.delta({"tool_calls": [{"index": index, **call}]})
        elif kind == "tool-call-delta":
            fragment = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments")
            if fragment:
                index = tool_index.get(data.get("index"), 0)
                yield writer.delta({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
        elif kind == "message-end":
            finished = True
            yield writer.delta({}, _finish_reason(delta.get("finish_reason"), model_name))
            usage = _usage(delta.get("usage"))
            if usage:
                yield writer.usage(usage)
    if not finished:
        raise UpstreamError(f"Upstream stream for model {model_name} ended before it was complete")


class Cohere(HttpProvider):
    """A model on Cohere's native v2 Chat API at `model.url`."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        self._headers, self._stream_headers = bearer_headers(model)

    def build_request(self, body: dict[str, Any], stream: bool) -> UpstreamRequest:
        payload = build_payload(body, self.model.upstream_model, stream)
        return UpstreamRequest(
            self.model.url, orjson.dumps(payload), self._stream_headers if stream else self._headers
        )

    def parse_response(self, data: Any) -> dict[str, Any]:
        return parse_completion(data, self.model.name)

    def parse_stream(self, events: Iterable[SSEEvent]) -> Iterator[dict[str, Any]]:
        return parse_chunks(events, self.model.name)
