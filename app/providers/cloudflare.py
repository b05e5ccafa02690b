"""Cloudflare Workers AI, native: `{url}/{upstream_model}` where `url` is the account's `…/ai/run` or an
AI Gateway's `…/workers-ai` (gateway headers such as `cf-aig-authorization` come from the model's
`headers`), or `url` itself when it already names a model (`run_url`, the one rule for every kind).
An account's `…/ai/v1/chat/completions` URL takes the OpenAI path instead.

Answers come in the v4 envelope (`result`, `success`, `errors`). Older models answer text in
`result.response` and `result.tool_calls` as `{name, arguments: {…}}`; newer ones an OpenAI-shaped
`result` and OpenAI chunks. Streams end with a cumulative `{"response": "", "usage": …}` event and
`[DONE]`; there is no finish reason in the native shape, so it is inferred.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import ProxyError
from app.http import SessionPool
from app.providers.base import HttpProvider, UpstreamRequest, bearer_headers
from app.providers.openai import parse_completion as parse_openai_completion
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
    renamed_params,
    retry_after_seconds,
    seconds_until_midnight,
    tool_call,
    usage,
)
from app.routing.cooldown import DAILY, RATE, Cooldown
from app.sse import SSEEvent

DAILY_LIMIT_CODES = frozenset({3036, 4006})  # the free 10,000 neurons a day are used up (reset 00:00 UTC)
CAPACITY_CODE = 3040  # "Capacity temporarily exceeded" / "No more data centers to forward the request to"
# copied when set, under the same names
PARAMS = {
    n: n for n in ("max_tokens", "temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
}


def run_url(model: ModelConfig) -> str:
    """Where a Workers AI model runs: `{url}/{upstream_model}`, unless the URL already names one."""
    if "/@" in urlsplit(model.url).path:
        return model.url
    return f"{model.url.rstrip('/')}/{model.upstream_model.lstrip('/')}"


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
                tool_names[call.get("id")] = call["function"]["name"]
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
    if data.get("success") is False:
        raise envelope_error(502, data, model_name, {})
    result = expect(data["result"], dict, "result")
    if "choices" in result:
        return parse_openai_completion(result, model_name)
    answer = Answer(model=model_name)
    output = answer.choice()
    text = result.get("response")
    if text is not None and not isinstance(text, str):  # JSON mode answers the parsed object
        text = orjson.dumps(text).decode()
    output.add_text(text)
    for call in result.get("tool_calls") or ():
        output.add_tool_call(_tool_call(call))
    output.finish_reason = "tool_calls" if output.calls else "stop"
    answer.usage = _usage(result.get("usage"))
    return answer.body()


def _tool_call(call: dict[str, Any], missing: str = "{}") -> dict[str, Any]:
    """A native `{name, arguments: {…}}` or OpenAI-shaped call -> OpenAI's, arguments as a JSON string."""
    function = call["function"] if isinstance(call.get("function"), dict) else call
    return tool_call(function.get("name"), function.get("arguments"), call.get("id"), missing=missing)


def _usage(counts: Any) -> dict[str, Any] | None:
    if not isinstance(counts, dict):
        return None
    details = counts.get("prompt_tokens_details")
    return usage(
        counts.get("prompt_tokens"),
        counts.get("completion_tokens"),
        cached=details.get("cached_tokens") if isinstance(details, dict) else None,
    )


def parse_chunks(events: Iterable[SSEEvent], model_name: str) -> Iterator[dict[str, Any]]:
    """Native `{"response": …}` events or OpenAI chunks -> our chunks, then finish and usage chunks.

    Per-chunk usage of OpenAI-shaped events is incremental; only the final `response` event's
    cumulative usage counts.
    """
    writer = ChunkWriter(model=model_name)
    calls: dict[Any, int] = {}  # upstream tool call index -> ours
    counts = None
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
                if delta or choice.get("finish_reason"):
                    yield writer.delta(delta, choice.get("finish_reason"))
            continue
        if data.get("usage"):
            counts = data["usage"]
        if data.get("response"):
            yield writer.delta({"content": data["response"]})
        if data.get("tool_calls"):
            deltas = _call_deltas(data["tool_calls"], calls)
            if deltas:
                yield writer.tool_calls(deltas)
    else:
        raise incomplete_stream(model_name)
    if not writer.finished:
        yield writer.delta({}, "tool_calls" if calls else "stop")
    counts = _usage(counts)
    if counts:
        yield writer.usage(counts)


def _call_deltas(upstream: list[dict[str, Any]], calls: dict[Any, int]) -> list[dict[str, Any]]:
    """Streamed tool calls -> OpenAI deltas: the first sight of an index carries id, name and arguments
    so far, later ones argument fragments. A whole native call (no `index`) is a call of its own."""
    deltas = []
    for call in upstream:
        function = call["function"] if isinstance(call.get("function"), dict) else call
        if not (call.get("id") or function.get("name") or function.get("arguments")):
            continue  # Workers AI closes a streamed call with an all-null entry
        key = call.get("index", -1 - len(calls))
        if key in calls:
            fragment = _tool_call(call, missing="")["function"]["arguments"]
            if fragment:
                deltas.append({"index": calls[key], "function": {"arguments": fragment}})
            continue
        calls[key] = len(calls)
        deltas.append({"index": calls[key], **_tool_call(call, missing="")})
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
        reset = seconds_until_midnight(UTC, now)
        daily = Cooldown(DAILY, reset, f"upstream code {code}: the day's free neurons are used up")
        return error_for_status(429, message, model_name, retry_after=reset, cooldown=daily)
    if code == CAPACITY_CODE:  # whatever the status: Cloudflare is busy, the key is fine
        wait = retry_after_seconds(headers, now)
        busy = Cooldown(RATE, wait, f"upstream code {code}: capacity temporarily exceeded")
        return error_for_status(429, message, model_name, retry_after=wait, cooldown=busy)
    return error_for_status(status, message, model_name, headers)


def envelope_result(data: Any, model_name: str) -> dict[str, Any]:
    """The `result` object of a v4 envelope (embeddings, transcriptions); `success: false` raises."""
    if isinstance(data, dict) and data.get("success") is False:
        raise envelope_error(502, data, model_name, {})
    return expect(expect(data, dict, "answer").get("result"), dict, "result")


def parse_error(
    status: int, body: bytes, headers: Mapping[str, str], model_name: str, now: float | None = None
) -> ProxyError:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return error_for_status(status, openai_error_message(body), model_name, headers)
    return envelope_error(status, data, model_name, headers, now)


class Cloudflare(HttpProvider):
    """A Workers AI model, called at its `run_url`."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        self._url = run_url(model)
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
