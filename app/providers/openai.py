"""The OpenAI-compatible path: OpenAI, Groq, OpenRouter and every compatible URL.

The client's request goes upstream unchanged but for `model`; answers come back as they are.
Quirks handled: Groq's `x_groq.usage`, OpenRouter's numeric error codes, rate-limit metadata and
mid-stream `error` events.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import ProxyError, UpstreamError
from app.http import SessionPool
from app.providers.base import (
    HttpProvider,
    UpstreamRequest,
    bearer_headers,
    error_for_status,
    openai_error_message,
)
from app.sse import SSEEvent


def build_payload(body: dict[str, Any], upstream_model: str, stream: bool) -> dict[str, Any]:
    """The client's request with only `model` rewritten; streams always ask for usage, which settles
    the token quota (the gateway drops the usage chunk if the client did not ask for it)."""
    payload = dict(body)
    payload["model"] = upstream_model
    if stream:
        payload["stream"] = True
        options = payload.get("stream_options")
        payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return payload


def parse_completion(data: Any, model_name: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        if isinstance(data, dict) and "error" in data:
            raise stream_error(data["error"], model_name)
        raise UpstreamError(f"Upstream for model {model_name} sent an answer without choices")
    return data


def stream_error(error: Any, model_name: str) -> ProxyError:
    """An `error` object inside a 200 answer or stream (OpenRouter, Groq, OpenAI)."""
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else 502
        metadata = error.get("metadata")
        retry_after = _openrouter_retry_after(metadata) if isinstance(metadata, dict) else None
        return error_for_status(status, message, model_name, retry_after=retry_after)
    return UpstreamError(f"Upstream for model {model_name} failed mid-answer: {error}")


def parse_chunks(events: Iterable[SSEEvent], model_name: str) -> Iterator[dict[str, Any]]:
    """OpenAI SSE events -> chunks, synthesising a usage chunk from Groq's `x_groq.usage`."""
    finished = False
    usage_sent = False
    groq_usage = None
    for event in events:
        data = event.data
        if data == b"[DONE]":
            break
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            raise stream_error(chunk["error"], model_name)
        choices = chunk.get("choices")
        if choices:
            for choice in choices:
                if choice.get("finish_reason"):
                    finished = True
            x_groq = chunk.get("x_groq")
            if x_groq and "usage" in x_groq:
                groq_usage = x_groq["usage"]
        if chunk.get("usage"):
            usage_sent = True
        yield chunk
    else:
        if not finished:
            raise UpstreamError(f"Upstream stream for model {model_name} ended before it was complete")
    if groq_usage and not usage_sent:
        yield {
            "id": "",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "",
            "choices": [],
            "usage": groq_usage,
        }


def _openrouter_retry_after(metadata: Mapping[str, Any]) -> float | None:
    """OpenRouter's 429 metadata carries X-RateLimit-Reset in epoch milliseconds."""
    headers = metadata.get("headers")
    if not isinstance(headers, dict):
        return None
    reset = headers.get("X-RateLimit-Reset") or headers.get("x-ratelimit-reset")
    try:
        return max(float(reset) / 1000.0 - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


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
                metadata = data["error"].get("metadata") if isinstance(data, dict) else None
                if isinstance(metadata, dict):
                    retry_after = _openrouter_retry_after(metadata)
            except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError):
                pass
        return error_for_status(
            status, openai_error_message(body), self.model.name, headers, retry_after=retry_after
        )
