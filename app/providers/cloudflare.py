"""Cloudflare Workers AI, native: `{url}/{upstream_model}` where `url` is the account's `…/ai/run` or an
AI Gateway's `…/workers-ai` (gateway headers such as `cf-aig-authorization` come from the model's
`headers`). An account's `…/ai/v1/chat/completions` URL takes the OpenAI path instead.

Answers come in the v4 envelope (`result`, `success`, `errors`). Older models answer text in
`result.response` and `result.tool_calls` as `{name, arguments: {…}}`; newer ones an OpenAI-shaped
`result` and OpenAI chunks. Streams end with a cumulative `{"response": "", "usage": …}` event and
`[DONE]`; there is no finish reason in the native shape, so it is inferred.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import ProxyError, UpstreamError
from app.http import SessionPool
from app.providers.base import (
    ChunkWriter,
    HttpProvider,
    UpstreamRequest,
    bearer_headers,
    chat_completion,
    content_text,
    error_for_status,
    function_tools,
    json_format,
    openai_error_message,
    openai_usage,
    renamed_params,
)
from app.providers.openai import parse_completion as parse_openai_completion
from app.sse import SSEEvent

DAILY_LIMIT_CODES = frozenset({3036, 4006})  # the free 10,000 neurons a day are used up (reset 00:00 UTC)
CAPACITY_CODE = 3040  # "Capacity temporarily exceeded" / "No more data centers to forward the request to"
# copied when set, under the same names
PARAMS = {
    n: n for n in ("max_tokens", "temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
}


def build_payload(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """OpenAI chat request -> Workers AI text-generation input (the model is in the URL)."""
    tool_names: dict[str, str] = {}  # tool call id -> function name, for the tool messages answering it
    messages = []
    for message in body.get("messages") or ():
        role = message.get("role")
        out: dict[str, Any] = {
            "role": "system" if role == "developer" else role,
            "content": content_text(message.get("content")),
        }
        if role == "assistant" and message.get("tool_calls"):
            out["tool_calls"] = [
                {"id": c.get("id"), "type": "function", "function": c.get("function")}
                for c in message["tool_calls"]
            ]
            for call in message["tool_calls"]:
                tool_names[call.get("id")] = (call.get("function") or {}).get("name")
        elif role == "tool":
            out["tool_call_id"] = message.get("tool_call_id")
            if tool_names.get(message.get("tool_call_id")):
                out["name"] = tool_names[message["tool_call_id"]]
        messages.append(out)
    payload: dict[str, Any] = {"messages": messages, "stream": stream}
    payload.update(renamed_params(body, PARAMS))
    kind, schema = json_format(body)
    if kind:  # Workers AI's json_schema is the schema itself
        payload["response_format"] = {"type": kind, "json_schema": schema} if schema else {"type": kind}
    tools, choice = function_tools(body)
    if tools:
        payload["tools"] = tools
    if choice:
        payload["tool_choice"] = choice
    return payload


def parse_completion(data: Any, model_name: str) -> dict[str, Any]:
    """The v4 envelope -> OpenAI chat.completion; `success: false` (even with HTTP 200) raises."""
    if isinstance(data, dict) and data.get("success") is False:
        raise envelope_error(502, data, model_name, {})
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, dict):
        raise UpstreamError(f"Upstream for model {model_name} sent an answer without a result")
    if "choices" in result:
        return parse_openai_completion(result, model_name)
    text = result.get("response")
    if text is not None and not isinstance(text, str):  # JSON mode answers the parsed object
        text = orjson.dumps(text).decode()
    calls = [{"id": c.get("id") or _call_id(), **_tool_call(c)} for c in result.get("tool_calls") or ()]
    message: dict[str, Any] = {"content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    finish_reason = "tool_calls" if calls else "stop"
    return chat_completion(_completion_id(), model_name, message, finish_reason, _usage(result.get("usage")))


def _tool_call(call: dict[str, Any], no_arguments: str = "{}") -> dict[str, Any]:
    """A native `{name, arguments: {…}}` or OpenAI-shaped call -> OpenAI's, arguments as a JSON string."""
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments")
    if arguments is None:
        arguments = no_arguments
    elif not isinstance(arguments, str):
        arguments = orjson.dumps(arguments).decode()
    return {"type": "function", "function": {"name": function.get("name") or "", "arguments": arguments}}


def _usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    return openai_usage(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(details.get("cached_tokens") or 0) if isinstance(details, dict) else None,
    )


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_chunks(events: Iterable[SSEEvent], model_name: str) -> Iterator[dict[str, Any]]:
    """Native `{"response": …}` events or OpenAI chunks -> our chunks, then finish and usage chunks.

    Per-chunk usage of OpenAI-shaped events is incremental; only the final `response` event's
    cumulative usage counts.
    """
    writer = ChunkWriter(_completion_id(), model_name)
    calls: dict[int, int] = {}  # upstream tool call index -> ours
    finish_reason = None
    usage = None
    for event in events:
        if event.data == b"[DONE]":
            break
        data = orjson.loads(event.data)
        if "choices" in data:
            for choice in data["choices"]:
                delta = {k: v for k, v in (choice.get("delta") or {}).items() if v is not None}
                if "tool_calls" in delta:
                    delta["tool_calls"] = _call_deltas(delta["tool_calls"], calls)
                    if not delta["tool_calls"]:
                        del delta["tool_calls"]
                finish_reason = choice.get("finish_reason") or finish_reason
                if delta or choice.get("finish_reason"):
                    yield writer.delta(delta, choice.get("finish_reason"))
            continue
        if data.get("usage"):
            usage = data["usage"]
        if data.get("response"):
            yield writer.delta({"content": data["response"]})
        if data.get("tool_calls"):
            deltas = _call_deltas(data["tool_calls"], calls)
            if deltas:
                yield writer.delta({"tool_calls": deltas})
    else:
        raise UpstreamError(f"Upstream stream for model {model_name} ended before it was complete")
    if finish_reason is None:
        yield writer.delta({}, "tool_calls" if calls else "stop")
    usage = _usage(usage)
    if usage:
        yield writer.usage(usage)


def _call_deltas(upstream: list[dict[str, Any]], calls: dict[int, int]) -> list[dict[str, Any]]:
    """Streamed tool calls -> OpenAI deltas: the first sight of an index carries id, name and arguments
    so far, later ones argument fragments. A whole native call (no `index`) is a call of its own."""
    deltas = []
    for call in upstream:
        function = call.get("function") if isinstance(call.get("function"), dict) else call
        if not (call.get("id") or function.get("name") or function.get("arguments")):
            continue  # Workers AI closes a streamed call with an all-null entry
        key = call.get("index", -1 - len(calls))
        if key in calls:
            fragment = _tool_call(call, no_arguments="")["function"]["arguments"]
            if fragment:
                deltas.append({"index": calls[key], "function": {"arguments": fragment}})
            continue
        calls[key] = len(calls)
        deltas.append({"index": calls[key], "id": call.get("id") or _call_id(), **_tool_call(call, "")})
    return deltas


def envelope_error(
    status: int, data: Any, model_name: str, headers: Mapping[str, str], now: float | None = None
) -> ProxyError:
    """`{"success": false, "errors": [{code, message}]}` (an AI Gateway says `error`) -> our error.

    Neuron and capacity codes are rate limits whatever the status; the daily one lasts until 00:00 UTC.
    """
    errors = (data.get("errors") or data.get("error")) if isinstance(data, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    message = str(first.get("message") or "")
    code = first.get("code")
    if code in DAILY_LIMIT_CODES:
        return error_for_status(429, message, model_name, retry_after=_seconds_to_utc_midnight(now))
    if code == CAPACITY_CODE:
        status = 429
    return error_for_status(status, message, model_name, headers)


def parse_error(
    status: int, body: bytes, headers: Mapping[str, str], model_name: str, now: float | None = None
) -> ProxyError:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return error_for_status(status, openai_error_message(body), model_name, headers)
    return envelope_error(status, data, model_name, headers, now)


def _seconds_to_utc_midnight(now: float | None) -> float:
    current = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    midnight = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - current).total_seconds()


class Cloudflare(HttpProvider):
    """A Workers AI model, called at `{model.url}/{model.upstream_model}`."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        self._url = f"{model.url.rstrip('/')}/{model.upstream_model.lstrip('/')}"
        self._headers, self._stream_headers = bearer_headers(model)

    def build_request(self, body: dict[str, Any], stream: bool) -> UpstreamRequest:
        payload = orjson.dumps(build_payload(body, stream))
        return UpstreamRequest(self._url, payload, self._stream_headers if stream else self._headers)

    def parse_response(self, data: Any) -> dict[str, Any]:
        return parse_completion(data, self.model.name)

    def parse_stream(self, events: Iterable[SSEEvent]) -> Iterator[dict[str, Any]]:
        return parse_chunks(events, self.model.name)

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        return parse_error(status, body, headers, self.model.name)
