"""The narrow provider interface, and the HTTP transport every HTTP provider shares.

A provider translates an OpenAI request for one configured model into its upstream's wire format,
calls the upstream, and translates the answer back. It knows nothing of Flask, quotas or breakers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.config import HttpConfig, ModelConfig
from app.errors import InvalidRequest, ProxyError
from app.http import SessionPool, UpstreamResponse
from app.providers.shape import TRANSLATION_ERRORS, error_for_status, malformed, openai_error_message
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


@dataclass(slots=True)
class Embeddings:
    """The vectors of one upstream call, in input order, and the tokens it counted (None: not said)."""

    vectors: list[list[float]]
    prompt_tokens: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Transcript:
    """A transcription answer as the upstream sent it, in the format the client asked for."""

    content: bytes
    content_type: str
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

    def embed(self, inputs: list[Any], body: dict[str, Any]) -> Embeddings:
        """Vectors of `inputs` (one batch; strings, or token arrays where the upstream takes them)."""
        raise InvalidRequest(f"Model {self.model.name} is a {self.model.kind} model, not an embedding model")

    def transcribe(self, audio: Any, body: dict[str, Any]) -> Transcript:
        """The transcript of `audio` (an app.providers.transcription.Upload) with OpenAI's form fields."""
        raise InvalidRequest(
            f"Model {self.model.name} is a {self.model.kind} model, not a transcription model"
        )

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
        response = self._open(body, stream=False)
        content = response.read()
        try:
            return Completion(self.parse_response(orjson.loads(content)), response.headers)
        except TRANSLATION_ERRORS as exc:  # the error boundary: never a 500, never the body
            raise malformed(self.model.name, cause=exc) from None

    def stream(self, body: dict[str, Any]) -> ChunkStream:
        response = self._open(body, stream=True)
        chunks = self.parse_stream(response.events())
        return ChunkStream(self._guard(chunks, response), response.headers, response.abort)

    def _open(self, body: dict[str, Any], *, stream: bool) -> UpstreamResponse:
        """The upstream's answer to `body`, whose headers say success; an error answer raises."""
        response = self._post(self.build_request(body, stream=stream), stream=stream)
        if response.status_code >= 400:
            raise self.parse_error(
                response.status_code, response.error_body(MAX_ERROR_BODY), response.headers
            )
        return response

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
        """Map untranslatable events to proxy errors (transport failures, deadlines and caps arrive
        already typed from `response.events()`); at a normal end, keep the connection."""
        name = self.model.name
        try:
            yield from chunks
        except TRANSLATION_ERRORS as exc:  # the error boundary: never a 500, never the event
            raise malformed(name, stream=True, cause=exc) from None
        response.release()


# --- shared helpers for adapters ------------------------------------------------------------


def bearer_headers(model: ModelConfig) -> tuple[dict[str, str], dict[str, str]]:
    """JSON request headers with the model's extra headers and bearer token: (plain, for a stream)."""
    headers = {"Content-Type": "application/json", **model.headers}
    if model.token:
        headers["Authorization"] = f"Bearer {model.token}"
    return headers, {**headers, "Accept": "text/event-stream"}
