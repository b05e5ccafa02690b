"""Cohere's v2 Chat API (`https://api.cohere.com/v2/chat`).

OpenAI messages map almost one to one; sampling names differ (`p`, `stop_sequences`), and the text an
assistant turn carries beside its tool calls is Cohere's `tool_plan` (and comes back as `content`).
Answers hold text parts, uppercase finish reasons and two token counts; streams are typed events
(`event:` + `data:`). A Compatibility API URL (`…/compatibility/v1/chat/completions`) takes the OpenAI
path instead. Errors are `{"id", "message"}`, which the base class's default already reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import ProxyError, UpstreamError, UpstreamTimeout
from app.http import SessionPool
from app.providers.base import HttpProvider, UpstreamRequest, bearer_headers
from app.providers.shape import (
    Answer,
    ChunkWriter,
    content_text,
    error_for_status,
    expect,
    function_tools,
    incomplete_stream,
    json_format,
    openai_error_message,
    optional_text,
    renamed_params,
    tool_call,
    usage,
)
from app.routing.cooldown import DAILY, Cooldown
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
    answer = Answer(optional_text(data.get("id"), "id"), model_name)
    output = answer.choice()
    output.finish_reason = _finish_reason(data.get("finish_reason"), model_name)
    message = expect(data["message"], dict, "message")
    for part in message.get("content") or ():
        if part["type"] == "text":
            output.add_text(part.get("text"))
        elif part["type"] == "thinking":
            output.add_reasoning(part.get("thinking"))
    calls = message.get("tool_calls")
    if calls:
        if not output.text:
            output.add_text(message.get("tool_plan"))
        for call in calls:
            output.add_tool_call(_tool_call(call))
    answer.usage = _usage(data.get("usage"))
    return answer.body()


def _tool_call(call: dict[str, Any], missing: str = "{}") -> dict[str, Any]:
    """Cohere's tool call is OpenAI's already (JSON-string arguments); fill what may be missing."""
    function = call.get("function") or {}
    return tool_call(function.get("name"), function.get("arguments") or None, call.get("id"), missing=missing)


def _finish_reason(reason: Any, model_name: str) -> str:
    """Cohere's reason -> OpenAI's; a failed or timed-out generation is an upstream failure."""
    if reason == "ERROR":
        raise UpstreamError(f"Upstream for model {model_name} failed while generating")
    if reason == "TIMEOUT":
        raise UpstreamTimeout(f"Upstream for model {model_name} timed out while generating")
    return FINISH_REASONS.get(reason, "stop")


def _usage(counts: Any) -> dict[str, Any] | None:
    """OpenAI usage from `tokens` (what the model processed, which `cached_tokens` is part of),
    falling back to `billed_units` (the smaller count Cohere bills)."""
    if not isinstance(counts, dict):
        return None
    tokens = counts.get("tokens") or counts.get("billed_units")
    if not isinstance(tokens, dict):
        return None
    return usage(tokens.get("input_tokens"), tokens.get("output_tokens"), cached=counts.get("cached_tokens"))


def parse_chunks(events: Iterable[SSEEvent], model_name: str) -> Iterator[dict[str, Any]]:
    """Cohere's typed stream events -> OpenAI chunks, ending with a usage chunk."""
    writer = ChunkWriter("", model_name)
    tool_index: dict[Any, int] = {}  # Cohere's index -> ours, in order of appearance
    for event in events:
        if event.data == b"[DONE]":
            break
        data = orjson.loads(event.data)
        kind = data.get("type") or event.event
        delta = data.get("delta") or {}
        message = delta.get("message") or {}
        if kind == "message-start":
            writer.id = optional_text(data.get("id"), "id")
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
            call = _tool_call(message.get("tool_calls") or {}, missing="")
            yield writer.tool_calls([{"index": index, **call}])
        elif kind == "tool-call-delta":
            fragment = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments")
            if fragment:
                index = tool_index.get(data.get("index"), 0)
                yield writer.tool_calls([{"index": index, "function": {"arguments": fragment}}])
        elif kind == "message-end":
            yield writer.delta({}, _finish_reason(delta.get("finish_reason"), model_name))
            counts = _usage(delta.get("usage"))
            if counts:
                yield writer.usage(counts)
    if not writer.complete:
        raise incomplete_stream(model_name)


def key_cooldown(status: int, message: str) -> Cooldown | None:
    """The key's cooldown class from a Cohere error: a trial key's monthly cap ("limited to 1000 API
    calls / month") rests it like a spent day (no reset is named: 24 h, then one call finds out);
    otherwise None, and the status decides (error_for_status)."""
    if status == 429 and "/ month" in message:
        return Cooldown(DAILY, None, "upstream 429: the trial key's monthly calls are used up")
    return None


def cohere_error(status: int, body: bytes, headers: Mapping[str, str], model_name: str) -> ProxyError:
    """Cohere's `{"id", "message"}` error -> our error, with the key's cooldown."""
    message = openai_error_message(body)
    return error_for_status(status, message, model_name, headers, cooldown=key_cooldown(status, message))


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

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        return cohere_error(status, body, headers, self.model.name)
