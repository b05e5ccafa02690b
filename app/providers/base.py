"""The narrow provider interface, and the HTTP transport every HTTP provider shares.

A provider translates an OpenAI request for one configured model into its upstream's wire format,
calls the upstream, and translates the answer back. It knows nothing of Flask, quotas or breakers.
"""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import (
    InvalidRequest,
    ProxyError,
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
)
from app.http import SessionPool, UpstreamResponse
from app.sse import SSEEvent

MAX_ERROR_BODY = 64 * 1024


@dataclass(slots=True)
class Completion:
    """An OpenAI `chat.completion` object plus the upstream's response headers (rate-limit hints)."""

    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Image:
    data: bytes
    content_type: str = "image/png"
    revised_prompt: str | None = None


@dataclass(slots=True)
class ImageResult:
    images: list[Image]
    headers: Mapping[str, str] = field(default_factory=dict)


class ChunkStream:
    """An open upstream stream of OpenAI `chat.completion.chunk` dicts; close() frees the connection.

    Providers always end a stream with a usage chunk (`choices: []`) when the upstream reported usage,
    and raise UpstreamError when the upstream stream ends before its end marker.
    """

    __slots__ = ("_chunks", "_close", "headers")

    def __init__(
        self,
        chunks: Iterator[dict[str, Any]],
        headers: Mapping[str, str],
        close: Callable[[], None],
    ) -> None:
        self._chunks = chunks
        self.headers = headers
        self._close = close

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._chunks

    def close(self) -> None:
        self._close()


class Provider(ABC):
    """One configured model's upstream."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        self.model = model
        self.http = http

    @abstractmethod
    def complete(self, body: dict[str, Any]) -> Completion:
        """Non-streaming chat completion. Raises ProxyError."""

    @abstractmethod
    def stream(self, body: dict[str, Any]) -> ChunkStream:
        """Open a streaming chat completion; errors before the first event raise here."""

    def generate_image(self, body: dict[str, Any]) -> ImageResult:
        raise InvalidRequest(f"Model {self.model.name} does not generate images", param="model")

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release anything the provider holds beyond the shared sessions."""


@dataclass(slots=True)
class UpstreamRequest:
    url: str
    payload: bytes
    headers: dict[str, str]


class HttpProvider(Provider):
    """Transport for providers spoken to over HTTP: subclasses supply the pure translations."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        self.transport = sessions.transport(model.provider)

    # --- translation hooks (pure; no I/O) ---------------------------------------------------
    @abstractmethod
    def build_request(self, body: dict[str, Any], stream: bool) -> UpstreamRequest:
        """OpenAI request -> the upstream's URL, headers and payload."""

    @abstractmethod
    def parse_response(self, data: Any) -> dict[str, Any]:
        """Upstream answer -> OpenAI chat.completion."""

    @abstractmethod
    def parse_stream(self, events: Iterable[SSEEvent]) -> Iterator[dict[str, Any]]:
        """Upstream SSE events -> OpenAI chunks; raise UpstreamError if the stream ends early."""

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        """Upstream error answer -> our error. Default reads OpenAI's envelope."""
        return error_for_status(status, openai_error_message(body), self.model.name, headers)

    # --- transport ---------------------------------------------------------------------------
    def complete(self, body: dict[str, Any]) -> Completion:
        response = self._post(self.build_request(body, stream=False), stream=False)
        if response.status_code >= 400:
            raise self.parse_error(
                response.status_code, response.error_body(MAX_ERROR_BODY), response.headers
            )
        content = response.read()
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"Upstream for model {self.model.name} sent an unreadable answer") from None
        return Completion(self.parse_response(data), response.headers)

    def stream(self, body: dict[str, Any]) -> ChunkStream:
        response = self._post(self.build_request(body, stream=True), stream=True)
        if response.status_code >= 400:
            raise self.parse_error(
                response.status_code, response.error_body(MAX_ERROR_BODY), response.headers
            )
        chunks = self.parse_stream(response.events())
        return ChunkStream(self._guard(chunks, response), response.headers, response.abort)

    def _post(self, request: UpstreamRequest, *, stream: bool) -> UpstreamResponse:
        return self.transport.post(
            request.url,
            data=request.payload,
            headers=request.headers,
            stream=stream,
            model_name=self.model.name,
        )

    def _guard(
        self, chunks: Iterator[dict[str, Any]], response: UpstreamResponse
    ) -> Iterator[dict[str, Any]]:
        """Map unreadable events to proxy errors (transport failures, deadlines and caps arrive
        already typed from `response.events()`); at a normal end, keep the connection."""
        name = self.model.name
        try:
            yield from chunks
        except orjson.JSONDecodeError:
            raise UpstreamError(f"Upstream stream for model {name} sent an unreadable event") from None
        response.release()


# --- shared helpers for adapters ------------------------------------------------------------


def bearer_headers(model: ModelConfig) -> tuple[dict[str, str], dict[str, str]]:
    """JSON request headers with the model's extra headers and bearer token: (plain, for a stream)."""
    headers = {"Content-Type": "application/json", **model.headers}
    if model.token:
        headers["Authorization"] = f"Bearer {model.token}"
    return headers, {**headers, "Accept": "text/event-stream"}


def content_text(content: Any) -> str:
    """The text of an OpenAI message `content`: the string, or its text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def function_tools(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The request's function tools (name, description, parameters only) and its `tool_choice` as
    "auto" | "none" | "required" | None; a named function becomes "required" over that tool alone,
    for upstreams that cannot name one."""
    tools = []
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name"):
            keep = {k: function[k] for k in ("name", "description", "parameters") if k in function}
            tools.append({"type": "function", "function": keep})
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return [t for t in tools if t["function"]["name"] == name], "required"
    return tools, choice if choice in ("auto", "none", "required") else None


def renamed_params(body: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The request's parameters that are set, renamed by `names` (OpenAI's -> the upstream's);
    `max_completion_tokens` is read as `max_tokens`."""
    values = {**body, "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens")}
    return {theirs: values[ours] for ours, theirs in names.items() if values.get(ours) is not None}


def json_format(body: Mapping[str, Any]) -> tuple[str | None, Any]:
    """The request's `response_format` as ("json_object" | "json_schema" | None, its JSON schema)."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None, None
    kind = response_format.get("type")
    if kind == "json_schema":
        return kind, (response_format.get("json_schema") or {}).get("schema")
    return (kind, None) if kind == "json_object" else (None, None)


def openai_usage(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return usage


def chat_completion(
    completion_id: str,
    model: str,
    message: dict[str, Any],
    finish_reason: str,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """A one-choice OpenAI chat.completion; `message` holds the fields beside `role`."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}
        ],
    }
    if usage:
        body["usage"] = usage
    return body


class ChunkWriter:
    """Builds the OpenAI chunks of one single-choice stream; the first delta carries the role."""

    __slots__ = ("_started", "created", "id", "model")

    def __init__(self, chunk_id: str, model: str) -> None:
        self.id = chunk_id
        self.model = model
        self.created = int(time.time())
        self._started = False

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        if not self._started:
            self._started = True
            delta = {"role": "assistant", **delta}
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish_reason}])

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        chunk = self._chunk([])
        chunk["usage"] = usage
        return chunk


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
) -> ProxyError:
    """Map an upstream HTTP status to our error classes."""
    detail = f": {message}" if message else ""
    if status in (401, 403):
        return UpstreamAuthError(f"The proxy's credentials for model {model_name} were rejected")
    if status == 429:
        if retry_after is None and headers is not None:
            retry_after = retry_after_seconds(headers)
        return RateLimited(f"Model {model_name} is rate limited upstream{detail}", retry_after=retry_after)
    if status in (408, 504):
        return UpstreamTimeout(f"Upstream for model {model_name} timed out{detail}")
    if 400 <= status < 500:
        return UpstreamBadRequest(message or f"Upstream rejected the request for model {model_name}")
    return UpstreamError(f"Upstream for model {model_name} failed with HTTP {status}{detail}")


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
