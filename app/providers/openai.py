"""The OpenAI-compatible path: OpenAI, Groq, OpenRouter and every compatible URL.

The client's request goes upstream unchanged but for `model`; answers come back as they are.
Quirks handled: Groq's `x_groq.usage`, OpenRouter's numeric error codes, rate-limit metadata and
mid-stream `error` events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import ProxyError
from app.http import SessionPool
from app.providers.base import HttpProvider, UpstreamRequest, bearer_headers
from app.providers.shape import (
    answer_error,
    check_chunk,
    check_completion,
    error_for_status,
    incomplete_stream,
    openai_error_message,
    seconds_until_epoch_ms,
)
from app.sse import SSEEvent


def build_payload(body: dict[str, Any], upstream_model: str, stream: bool) -> dict[str, Any]:
    """The client's request with only `model` rewritten; streams always ask for usage, which settles
    the token quota (the gateway drops the usage chunk if the client did not ask for it)."""
    payload = dict(body)
    payload["model"] = upstream_model
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
    return payload


def parse_completion(data: Any, model_name: str) -> dict[str, Any]:
    """A compatible answer, passed through once its shape is checked; an `error` inside a 200 raises."""
    if isinstance(data, dict) and "error" in data and not isinstance(data.get("choices"), list):
        raise stream_error(data["error"], model_name)
    return check_completion(data)


def stream_error(error: Any, model_name: str) -> ProxyError:
    """An `error` object inside a 200 answer or stream (OpenRouter, Groq, OpenAI)."""
    return answer_error(error, model_name, openrouter_retry_after(error))


def parse_chunks(events: Iterable[SSEEvent], model_name: str) -> Iterator[dict[str, Any]]:
    """OpenAI SSE events -> chunks (checked), synthesising a usage chunk from Groq's `x_groq.usage`."""
    finished = False
    usage_sent = False
    groq_usage = None
    for event in events:
        if event.data == b"[DONE]":
            break
        chunk = orjson.loads(event.data)
        if isinstance(chunk, dict) and "error" in chunk:
            raise stream_error(chunk["error"], model_name)
        check_chunk(chunk)
        if any(choice.get("finish_reason") for choice in chunk["choices"]):
            finished = True
        x_groq = chunk.get("x_groq")
        if isinstance(x_groq, dict) and x_groq.get("usage") is not None:
            groq_usage = check_chunk({"choices": [], "usage": x_groq["usage"]})["usage"]
        if chunk.get("usage"):
            usage_sent = True
        yield chunk
    else:
        if not finished:
            raise incomplete_stream(model_name)
    if groq_usage and not usage_sent:
        yield {
            "id": "",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "",
            "choices": [],
            "usage": groq_usage,
        }


def openrouter_retry_after(error: Any) -> float | None:
    """OpenRouter's 429 metadata carries X-RateLimit-Reset in epoch milliseconds."""
    metadata = error.get("metadata") if isinstance(error, dict) else None
    headers = metadata.get("headers") if isinstance(metadata, dict) else None
    if not isinstance(headers, dict):
        return None
    return seconds_until_epoch_ms(headers.get("X-RateLimit-Reset") or headers.get("x-ratelimit-reset"))


class OpenAICompatible(HttpProvider):
    """Any upstream that speaks OpenAI's Chat Completions at `model.url`."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        self._headers, self._stream_headers = bearer_headers(model)

    def build_request(self, body: dict[str, Any], stream: bool) -> UpstreamRequest:
        payload = build_payload(body, self.model.upstream_model, stream)
        return UpstreamRequest(
            self.model.url,
            orjson.dumps(payload),
            self._stream_headers if stream else self._headers,
        )

    def parse_response(self, data: Any) -> dict[str, Any]:
        return parse_completion(data, self.model.name)

    def parse_stream(self, events: Iterable[SSEEvent]) -> Iterator[dict[str, Any]]:
        return parse_chunks(events, self.model.name)

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        retry_after = None
        if status == 429:
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                data = None
            retry_after = openrouter_retry_after(data.get("error") if isinstance(data, dict) else None)
        return error_for_status(
            status, openai_error_message(body), self.model.name, headers, retry_after=retry_after
        )
