"""The one path every request takes: route, guard, call, settle.

The gateway knows neither Flask nor any provider's wire format: it asks the router for a model,
calls that model's provider, reports the outcome back to the router and falls back when it may.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import random
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from app.config import Config, ModelConfig
from app.errors import ModelNotFound, ProxyError, RateLimited, ServiceUnavailable, UpstreamError
from app.providers import ChunkStream, ImageResult, Provider
from app.providers.reasoning import ReasoningStream, split_reasoning
from app.routing import Reservation, Router, estimate_tokens
from app.sse import DONE, encode

T = TypeVar("T")
HEARTBEAT = b": keep-alive\n\n"


@dataclass(slots=True)
class Trace:
    """What happened to one client request, for the access log and metrics."""

    asked: str = ""
    served: str = ""
    provider: str = ""
    attempts: int = 0
    fallbacks: int = 0
    upstream_ms: float = 0.0
    first_token_ms: float | None = None
    stream_error: str | None = None
    usage: dict[str, Any] | None = None


@dataclass(slots=True)
class ChatAnswer:
    body: dict[str, Any]
    model: ModelConfig
    headers: dict[str, str]


@dataclass(slots=True)
class StreamAnswer:
    model: ModelConfig
    headers: dict[str, str]
    events: Iterator[bytes]


@dataclass(slots=True)
class ImageAnswer:
    result: ImageResult
    model: ModelConfig
    headers: dict[str, str]


def request_length(messages: list[dict[str, Any]]) -> int:
    """Characters of every text in the conversation: what `max_request_length` is compared with."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"])
    return total


def has_content(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"):
            return True
    return False


def error_event(error: ProxyError) -> bytes:
    return encode(error.to_dict())


@dataclass(slots=True)
class _Attempts:
    """Routing state of one client request across its attempts (distinct models, retries)."""

    candidates: list[ModelConfig]
    concrete: bool
    length: int
    tokens: int
    trace: Trace
    tried: list[str] = field(default_factory=list)
    failures: list[tuple[str, ProxyError]] = field(default_factory=list)


class Gateway:
    def __init__(
        self,
        config: Config,
        router: Router,
        providers: Mapping[str, Provider],
        *,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.router = router
        self.providers = providers
        self._sleep = sleep
        self._jitter = jitter
        self._heartbeat = config.server.heartbeat_seconds
        # Opens upstream streams, and reads them, in the background while the client gets heartbeats.
        self._opener = ThreadPoolExecutor(max_workers=256, thread_name_prefix="ai-proxy-open")

    # --- public entry points -----------------------------------------------------------------
    def chat(self, body: dict[str, Any], trace: Trace) -> ChatAnswer:
        attempts = self._plan(body, "chat", trace)
        reservation, completion = self._run(attempts, lambda p: p.complete(body))
        answer = completion.body
        answer["model"] = reservation.model.name
        if reservation.model.reasoning != "keep":
            split_reasoning(answer, reservation.model.reasoning)
        usage = answer.get("usage")
        trace.usage = usage if isinstance(usage, dict) else None
        self.router.succeeded(reservation, completion.headers, _total_tokens(trace.usage))
        return ChatAnswer(answer, reservation.model, self.router.ratelimit_headers(reservation.model))

    def chat_stream(self, body: dict[str, Any], trace: Trace) -> StreamAnswer:
        """Open the upstream stream and relay it. Errors while it opens are ordinary HTTP errors,
        unless opening takes longer than `heartbeat_seconds`: then the answer starts at once (200)
        with heartbeats, so that no proxy or load balancer in between gives up on the first byte,
        and a later failure is an error event."""
        started = time.perf_counter()
        attempts = self._plan(body, "chat", trace)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

        def open_stream() -> tuple[Reservation, ChunkStream]:
            return self._run(attempts, lambda p: _Prefetched(p.stream(body)))

        if self._heartbeat <= 0:
            reservation, upstream = open_stream()
        else:
            opening = self._opener.submit(open_stream)
            try:
                reservation, upstream = opening.result(timeout=self._heartbeat)
            except TimeoutError:
                model = next(
                    (m for m in attempts.candidates if m.name == trace.served), attempts.candidates[0]
                )
                events = self._relay_when_open(attempts, opening, body, include_usage, started)
                return StreamAnswer(model, self.router.ratelimit_headers(model), events)
        events = self._relay(attempts, reservation, upstream, body, include_usage, started)
        return StreamAnswer(reservation.model, self.router.ratelimit_headers(reservation.model), events)

    def image(self, body: dict[str, Any], trace: Trace) -> ImageAnswer:
        prompt = body.get("prompt")
        attempts = self._plan_for(str(body.get("model") or ""), "image", len(prompt or ""), 0, trace)
        reservation, result = self._run(attempts, lambda p: p.generate_image(body))
        self.router.succeeded(reservation, result.headers, None)
        return ImageAnswer(result, reservation.model, self.router.ratelimit_headers(reservation.model))

    # --- routing loop ------------------------------------------------------------------------
    def _plan(self, body: dict[str, Any], kind: str, trace: Trace) -> _Attempts:
        length = request_length(body["messages"])
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        tokens = estimate_tokens(length, max_tokens if isinstance(max_tokens, int) else None)
        return self._plan_for(body["model"], kind, length, tokens, trace)

    def _plan_for(self, name: str, kind: str, length: int, tokens: int, trace: Trace) -> _Attempts:
        trace.asked = name
        if name:
            candidates = self.router.resolve(name, kind)
        else:  # no model named (allowed for images): any enabled model of that kind
            candidates = [m for m in self.config.enabled_models if m.kind == kind]
            if not candidates:
                raise ModelNotFound(f"No {kind} model is configured", param="model")
        concrete = len(candidates) == 1 and candidates[0].name == name
        return _Attempts(candidates, concrete, length, tokens, trace)

    def _run(self, attempts: _Attempts, call: Callable[[Provider], T]) -> tuple[Reservation, T]:
        """Acquire a model and call it; on a retryable failure fall back to the next model."""
        trace = attempts.trace
        while True:
            try:
                reservation = self.router.acquire(
                    attempts.candidates,
                    length=attempts.length,
                    tokens=attempts.tokens,
                    exclude=attempts.tried,
                )
            except ProxyError as exc:
                raise self._exhausted(attempts, exc) from None
            model = reservation.model
            if attempts.tried:
                trace.fallbacks += 1
            trace.served, trace.provider = model.name, model.provider
            try:
                return reservation, self._call_with_retries(attempts, model, call)
            except ProxyError as exc:
                self._give_up_on(attempts, reservation, exc)

    def _give_up_on(self, attempts: _Attempts, reservation: Reservation, exc: ProxyError) -> None:
        """Report a failed model to the router; raise when the request can't fall back any further."""
        self.router.failed(reservation, exc)
        attempts.tried.append(reservation.model.name)
        attempts.failures.append((reservation.model.name, exc))
        limit = 1 if attempts.concrete else max(self.config.routing.max_attempts, 1)
        if not exc.retryable or len(attempts.tried) >= limit:
            raise self._exhausted(attempts, None)

    def _call_with_retries(self, attempts: _Attempts, model: ModelConfig, call: Callable[[Provider], T]) -> T:
        """A concrete model is retried with backoff and full jitter; a group falls back instead."""
        provider = self.providers[model.name]
        trace = attempts.trace
        while True:
            trace.attempts += 1
            started = time.perf_counter()
            try:
                return call(provider)
            except ProxyError as exc:
                failure = exc
            finally:
                trace.upstream_ms += (time.perf_counter() - started) * 1000.0
            if not self._may_retry(attempts, failure):
                raise failure
            self._backoff(trace.attempts - 1, failure)

    def _may_retry(self, attempts: _Attempts, exc: ProxyError) -> bool:
        """Same-model retries: concrete models only, transient failures only. A 429 is retried
        only when the upstream asks for a wait no longer than `retry.max_delay`."""
        if not (attempts.concrete and exc.retryable):
            return False
        if attempts.trace.attempts >= max(self.config.retry.max_attempts, 1):
            return False
        if isinstance(exc, RateLimited):
            return exc.retry_after is not None and exc.retry_after <= self.config.retry.max_delay
        return True

    def _backoff(self, attempt: int, failure: ProxyError | None = None) -> None:
        """Exponential backoff with full jitter; at least as long as a 429 asked for."""
        retry = self.config.retry
        delay = self._jitter() * min(retry.max_delay, retry.base_delay * (2**attempt))
        if isinstance(failure, RateLimited) and failure.retry_after:
            delay = max(delay, failure.retry_after)
        self._sleep(delay)

    @staticmethod
    def _exhausted(attempts: _Attempts, routing_error: ProxyError | None) -> ProxyError:
        """The error for a request no model could serve, naming what was tried and why."""
        failures = attempts.failures
        if not failures:
            assert routing_error is not None
            return routing_error
        if len(failures) == 1 and (routing_error is None or not failures[0][1].retryable):
            return failures[0][1]
        summary = "; ".join(f"{name}: {exc.message}" for name, exc in failures)
        if routing_error is not None:
            summary += f"; {routing_error.message}"
        message = f"No model could serve this request ({summary})"
        waits = [exc.retry_after for _, exc in failures if isinstance(exc, RateLimited) and exc.retry_after]
        if all(isinstance(exc, RateLimited) for _, exc in failures) and (
            routing_error is None or isinstance(routing_error, RateLimited)
        ):
            if routing_error is not None and routing_error.retry_after:
                waits.append(routing_error.retry_after)
            return RateLimited(message, retry_after=min(waits) if waits else None)
        return ServiceUnavailable(message)

    # --- streaming ---------------------------------------------------------------------------
    def _relay(
        self,
        attempts: _Attempts,
        reservation: Reservation,
        upstream: ChunkStream,
        body: dict[str, Any],
        include_usage: bool,
        started: float,
    ) -> Iterator[bytes]:
        """Relay chunks as they arrive; before any content a failure is retried invisibly,
        after it the stream ends with an OpenAI error event and [DONE], never silently."""
        trace = attempts.trace
        sent_content = False
        try:
            while True:
                model = reservation.model
                reasoning = ReasoningStream(model.reasoning) if model.reasoning != "keep" else None
                usage: dict[str, Any] | None = None
                held: list[bytes] = []  # chunks before the first content (role): dropped on a retry
                try:
                    for item in self._with_heartbeat(upstream):
                        if item is None:
                            yield HEARTBEAT
                            continue
                        item["model"] = model.name
                        if not item.get("choices") and "usage" in item:
                            usage = item["usage"]
                            if include_usage:
                                yield encode(item)
                            continue
                        if reasoning is not None:
                            reasoning.process(item)
                        if not sent_content:
                            if not has_content(item):
                                held.append(encode(item))
                                continue
                            sent_content = True
                            trace.first_token_ms = (time.perf_counter() - started) * 1000.0
                            yield from held
                        yield encode(item)
                    if not sent_content:
                        raise UpstreamError(f"Upstream stream for model {model.name} ended without content")
                except ProxyError as exc:
                    _close(upstream)
                    if sent_content:
                        self.router.failed(reservation, exc)
                        trace.stream_error = exc.message
                        yield error_event(exc)
                        yield DONE
                        return
                    if self._heartbeat <= 0:
                        reservation, upstream = self._recover(attempts, reservation, exc, body)
                    else:
                        retry = self._opener.submit(self._recover, attempts, reservation, exc, body)
                        reservation, upstream = yield from self._heartbeats_until(retry)
                    continue
                trace.usage = usage
                self.router.succeeded(reservation, upstream.headers, _total_tokens(usage))
                yield DONE
                return
        except ProxyError as exc:  # no model left to fall back to, before any content
            trace.stream_error = exc.message
            yield error_event(exc)
            yield DONE
        finally:
            _close(upstream)

    def _relay_when_open(
        self,
        attempts: _Attempts,
        opening: Future[tuple[Reservation, ChunkStream]],
        body: dict[str, Any],
        include_usage: bool,
        started: float,
    ) -> Iterator[bytes]:
        """Heartbeats until the upstream stream opens, then the relay; failing to open is an error event."""
        try:
            reservation, upstream = yield from self._heartbeats_until(opening)
        except ProxyError as exc:
            attempts.trace.stream_error = exc.message
            yield error_event(exc)
            yield DONE
            return
        yield from self._relay(attempts, reservation, upstream, body, include_usage, started)

    def _heartbeats_until(
        self, opening: Future[tuple[Reservation, ChunkStream]]
    ) -> Generator[bytes, None, tuple[Reservation, ChunkStream]]:
        """A heartbeat every `heartbeat_seconds` until the background open is done; its result.
        If the client leaves first, the stream is closed as soon as it opens."""
        taken = False
        try:
            while True:
                try:
                    result = opening.result(timeout=self._heartbeat)
                except TimeoutError:
                    yield HEARTBEAT
                    continue
                taken = True
                return result
        finally:
            if not taken:
                opening.add_done_callback(_close_opened)

    def _recover(
        self, attempts: _Attempts, reservation: Reservation, failure: ProxyError, body: dict[str, Any]
    ) -> tuple[Reservation, ChunkStream]:
        """After a stream failed before any content: retry the same model or fall back."""
        stream: Callable[[Provider], ChunkStream] = lambda p: _Prefetched(p.stream(body))  # noqa: E731
        if self._may_retry(attempts, failure):
            self._backoff(attempts.trace.attempts - 1, failure)
            try:
                return reservation, self._call_with_retries(attempts, reservation.model, stream)
            except ProxyError as exc:
                failure = exc
        self._give_up_on(attempts, reservation, failure)
        return self._run(attempts, stream)

    def _with_heartbeat(self, upstream: ChunkStream) -> Iterator[dict[str, Any] | None]:
        """Chunks from the upstream, with None every `heartbeat_seconds` the upstream is silent."""
        first = upstream.first if isinstance(upstream, _Prefetched) else []
        if self._heartbeat <= 0:
            yield from first
            yield from upstream
            return
        inbox: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()

        def pump() -> None:
            try:
                for chunk in upstream:
                    inbox.put((0, chunk))
                inbox.put((1, None))
            except BaseException as exc:  # handed to the consumer thread and raised there
                inbox.put((2, exc))

        self._opener.submit(pump)  # a pooled thread: starting a new one per stream costs ~0.1 ms
        yield from first  # read by the opening thread: sent without waiting for the reader
        while True:
            try:
                kind, value = inbox.get(timeout=self._heartbeat)
            except queue.Empty:
                yield None
                continue
            if kind == 0:
                yield value
            elif kind == 1:
                return
            else:
                raise value


class _Prefetched(ChunkStream):
    """An upstream stream whose first chunk the opening thread has already read (`first`; iterating
    gives the rest). The request thread sends it at once instead of waiting for a reader thread to
    be handed the stream and to pass the chunk back: two thread handoffs less before the first byte.
    A failure in that first read counts as a failure to open, retried or fallen back like one."""

    __slots__ = ("first",)

    def __init__(self, stream: ChunkStream) -> None:
        chunks = iter(stream)
        super().__init__(chunks, stream.headers, stream.close)
        try:
            self.first = list(itertools.islice(chunks, 1))
        except BaseException:
            _close(stream)
            raise


def _close(upstream: ChunkStream) -> None:
    """Free an upstream stream. Closing must never raise: it runs on the way to an error event."""
    with contextlib.suppress(Exception):
        upstream.close()


def _close_opened(opening: Future[tuple[Reservation, ChunkStream]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        _close(opening.result()[1])


def _total_tokens(usage: dict[str, Any] | None) -> int | None:
    if not usage:
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt + completion
    return None
