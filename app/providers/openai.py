"""The OpenAI-compatible path: OpenAI, Groq, OpenRouter and every compatible URL.

The client's request goes upstream unchanged but for `model`; answers come back as they are.
Quirks handled: Groq's `x_groq.usage`, OpenRouter's numeric error codes, rate-limit metadata and
mid-stream `error` events.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import ProxyError, UpstreamBadRequest, UpstreamError
from app.http import SessionPool
from app.providers.base import HttpProvider, UpstreamRequest, bearer_headers
from app.providers.shape import (
    answer_error,
    check_chunk,
    check_completion,
    error_for_status,
    incomplete_stream,
    openai_error_message,
    retry_after_seconds,
    seconds_until_epoch_ms,
    status_cooldown,
)
from app.routing.cooldown import CREDIT, DAILY, RATE, UNAVAILABLE, Cooldown
from app.sse import SSEEvent

# Groq's and OpenAI's 429 wording for a per-day window: "... on requests per day (RPD): Limit ..."
PER_DAY = re.compile(r"per day \((?:RPD|TPD)\)", re.IGNORECASE)
# OpenRouter's message when the provider it routed to failed; with 429 that provider is rate limited
# (its own words in `metadata.raw`), which says nothing about this key's day or validity.
PROVIDER_ERROR = "Provider returned error"


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
    """An `error` object inside a 200 answer or stream (OpenRouter, Groq, OpenAI); its numeric `code`
    is the status it means, which with its message decides the key's cooldown."""
    failure = answer_error(error, model_name, openrouter_retry_after(error))
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and failure.cooldown is not None:
        failure.cooldown = key_cooldown(code, error, {})
    return failure


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


def openrouter_retry_after(error: Any, now: float | None = None) -> float | None:
    """OpenRouter's 429 metadata carries X-RateLimit-Reset in epoch milliseconds."""
    metadata = error.get("metadata") if isinstance(error, dict) else None
    headers = metadata.get("headers") if isinstance(metadata, dict) else None
    if not isinstance(headers, dict):
        return None
    return seconds_until_epoch_ms(headers.get("X-RateLimit-Reset") or headers.get("x-ratelimit-reset"), now)


def key_cooldown(
    status: int, error: Any, headers: Mapping[str, str], now: float | None = None
) -> Cooldown | None:
    """The key's cooldown class from an OpenAI-compatible error (OpenAI, Groq, OpenRouter), or None
    when the failure is not the key's. `error` is the envelope's `error` object."""
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or "")
    code = error.get("code")
    if status == 429:
        if code == "insufficient_quota" or error.get("type") == "insufficient_quota":
            return Cooldown(CREDIT, None, "upstream 429 insufficient_quota: out of credit")
        reset = openrouter_retry_after(error, now)
        if reset is None:
            reset = seconds_until_epoch_ms(headers.get("x-ratelimit-reset"), now)
        if "free-models-per-day" in message:
            return Cooldown(DAILY, reset, "upstream 429: free-models-per-day spent")
        if "free-models-per-min" in message:
            return Cooldown(RATE, reset, "upstream 429: free-models-per-min spent")
        retry_after = retry_after_seconds(headers, now)
        if message == PROVIDER_ERROR:
            return Cooldown(RATE, retry_after, _provider_rate_reason(error))
        if PER_DAY.search(message):
            return Cooldown(DAILY, retry_after, "upstream 429: a per-day limit is spent")
        return Cooldown(RATE, retry_after if retry_after is not None else reset, "upstream 429: rate limited")
    if status in (403, 404) and code == "model_not_found":
        return Cooldown(UNAVAILABLE, None, f"upstream {status}: this key has no access to the model")
    return status_cooldown(status)


def _provider_rate_reason(error: dict[str, Any]) -> str:
    metadata = error.get("metadata")
    provider = metadata.get("provider_name") if isinstance(metadata, dict) else None
    behind = f" ({provider[:60]})" if isinstance(provider, str) and provider else ""
    return f"upstream 429: the provider behind OpenRouter{behind} is rate limited"


def compatible_error(
    status: int, body: bytes, headers: Mapping[str, str], model_name: str, now: float | None = None
) -> ProxyError:
    """An OpenAI-compatible error answer -> our error, with the key's cooldown when it is the key's.
    A 403 for the client's content (OpenRouter's moderation) or the proxy's region is not the key's."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    message = openai_error_message(body)
    metadata = error.get("metadata")
    if status == 403 and isinstance(metadata, dict) and "reasons" in metadata:
        return UpstreamBadRequest(message or f"Upstream refused the content for model {model_name}")
    if status == 403 and error.get("code") == "unsupported_country_region_territory":
        return UpstreamError(f"Upstream for model {model_name} refused to serve: {message}")
    cooldown = key_cooldown(status, error, headers, now)
    retry_after = cooldown.seconds if cooldown is not None and status == 429 else None
    return error_for_status(status, message, model_name, headers, retry_after=retry_after, cooldown=cooldown)


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
        return compatible_error(status, body, headers, self.model.name)
