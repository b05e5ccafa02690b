"""The one path every request takes: route, guard, call, settle.

The gateway knows neither Flask nor any provider's wire format, and writes no bytes: it asks the router
for a model, calls that model's provider, reports the outcome back to the router and falls back when it
may. A front API (Chat Completions, Anthropic Messages, Responses, ...) translates its request into the
internal chat request (OpenAI Chat Completions' shape), calls `Gateway.chat` once and gets a `ChatAnswer`
or, for `stream: true`, a `StreamAnswer` whose events (app.events) it writes in its own format.

Everything a provider raises passes one boundary (`_upstream_failure`): a ProxyError leaves with its
message redacted, anything else becomes a retryable UpstreamError and one WARNING line.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from app.clients import Client
from app.config import Config, ModelConfig
from app.errors import (
    ClientClosedRequest,
    InvalidRequest,
    ModelNotFound,
    ProxyError,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)
from app.events import HEARTBEAT, StreamEvent, StreamFailed
from app.providers import (
    EMBEDDING,
    OPENAI_EMBEDDINGS,
    TRANSCRIPTION,
    ChunkStream,
    Completion,
    ImageResult,
    Provider,
    Transcript,
    embedding_batch,
    embedding_shape,
)
from app.providers.reasoning import ReasoningStream, split_reasoning
from app.providers.shape import max_tokens
from app.redact import Redactor
from app.routing import ClientCharge, ClientPlan, Reservation, Router, estimate_tokens

T = TypeVar("T")
log = logging.getLogger("ai_proxy.gateway")


@dataclass(slots=True)
class Trace:
    """What happened to one client request, for the access log and metrics."""

    asked: str = ""
    served: str = ""
    key: str = ""  # the served model's key as `#N`, never its value
    provider: str = ""
    attempts: int = 0
    fallbacks: int = 0
    upstream_ms: float = 0.0
    first_token_ms: float | None = None
    stream_error: str | None = None
    usage: dict[str, Any] | None = None
    client: Client | None = None  # who asked (set by auth): its allowed models and windows
    client_gone: Callable[[], bool] | None = None  # whether the client has hung up (when the server tells)


@dataclass(slots=True)
class ChatAnswer:
    """A whole `chat.completion` from `model`, with the headers that describe its quota."""

    body: dict[str, Any]
    model: ModelConfig
    headers: dict[str, str]


@dataclass(slots=True)
class StreamAnswer:
    """A started stream: `events` as app.events describes them. `model` and `headers` name the model
    that serves, unless the stream had to start (heartbeats) before any model had sent content: then
    they name the model being tried at that moment, and the chunks' `model` names the one that served."""

    model: ModelConfig
    headers: dict[str, str]
    events: Iterator[StreamEvent]


@dataclass(slots=True)
class ImageAnswer:
    result: ImageResult
    model: ModelConfig
    headers: dict[str, str]


@dataclass(slots=True)
class EmbeddingAnswer:
    """Every input's vector in input order (joined from the batches), and the tokens counted."""

    vectors: list[list[float]]
    prompt_tokens: int
    model: ModelConfig
    headers: dict[str, str]


@dataclass(slots=True)
class TranscriptAnswer:
    transcript: Transcript
    model: ModelConfig
    headers: dict[str, str]


# The stream pool's size: no cap of its own. Each of its tasks (a stream's opening, then its reader)
# belongs to a stream that holds one of the web server's request threads meanwhile, or that its client
# left while it opened (its connect and read timeouts end it): the server's thread count already bounds
# them. A cap here could only queue a stream's reader behind streams that last minutes, stalling it with
# no heartbeat. The pool starts a thread only when none of its threads is idle, and keeps it.
STREAM_THREADS = sys.maxsize

# Kinds whose front APIs answer a model of another kind with a 400 naming its kind (chat and image
# keep their 404, as before these kinds existed).
KIND_CHECKED = frozenset({EMBEDDING, TRANSCRIPTION})


def input_length(inputs: list[Any]) -> int:
    """Characters of text inputs (a token array counts four per token)."""
    return sum(len(item) if isinstance(item, str) else 4 * len(item) for item in inputs)


def embedding_tokens(inputs: list[Any]) -> int:
    """The estimate counted against token windows: characters / 4 (a token array: its length)."""
    return sum(-(-len(item) // 4) if isinstance(item, str) else len(item) for item in inputs)


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


@dataclass(slots=True)
class _Attempts:
    """Routing state of one client request across its attempts (distinct models, retries)."""

    candidates: list[ModelConfig]
    concrete: bool
    length: int
    tokens: int
    trace: Trace
    started: float = field(default_factory=time.perf_counter)
    tried: list[str] = field(default_factory=list)  # models, or slots (`name#N`) after a key failure
    next_key_of: ModelConfig | None = None  # a key failure: this model's other keys come first
    failures: list[tuple[str, ProxyError]] = field(default_factory=list)
    charge: ClientCharge | None = None  # the client's windows, charged by the first reservation


class _Upstream:
    """One model's open upstream stream. The opening thread reads it up to its first content (`head`,
    the content chunk last); the relay goes on with `chunks`. Every chunk passes `prepare` once."""

    __slots__ = ("chunks", "head", "model", "reasoning", "stream", "usage")

    def __init__(self, stream: ChunkStream, model: ModelConfig) -> None:
        self.stream = stream
        self.chunks: Iterator[dict[str, Any]] = iter(stream)
        self.model = model
        self.head: list[dict[str, Any]] = []
        self.usage: Any = None
        self.reasoning = ReasoningStream(model.reasoning) if model.reasoning != "keep" else None

    def prepare(self, chunk: dict[str, Any]) -> None:
        """Name the serving model, note the usage, apply the model's reasoning mode."""
        chunk["model"] = self.model.name
        if not chunk.get("choices") and "usage" in chunk:
            self.usage = chunk["usage"]
        elif self.reasoning is not None:
            self.reasoning.process(chunk)


Opened = tuple[Reservation, _Upstream]


class Gateway:
    def __init__(
        self,
        config: Config,
        router: Router,
        providers: Mapping[str, Provider],
        *,
        redactor: Redactor | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.router = router
        self.providers = providers
        self.redact = redactor if redactor is not None else Redactor()
        self._sleep = sleep
        self._jitter = jitter
        self._heartbeat = config.server.heartbeat_seconds
        # The kind of each configured model, and the kinds of each group's members (for _check_kind).
        self._model_kinds = {m.name: m.kind for m in config.models}
        self._group_kinds: dict[str, set[str]] = {}
        for m in config.models:
            if m.group:
                self._group_kinds.setdefault(m.group, set()).add(m.kind)
        # Opens upstream streams, and reads them, in the background while the client gets heartbeats.
        self._streams = ThreadPoolExecutor(max_workers=STREAM_THREADS, thread_name_prefix="ai-proxy-stream")

    # --- public entry points -----------------------------------------------------------------
    def chat(self, body: dict[str, Any], trace: Trace) -> ChatAnswer | StreamAnswer:
        """The one call of every chat front API: `body` is the internal chat request (OpenAI Chat
        Completions' shape, validated); `stream: true` gives a StreamAnswer, else a ChatAnswer.
        Raises ProxyError (redacted) when no model can serve before anything was sent."""
        return self.chat_stream(body, trace) if body.get("stream") else self.chat_complete(body, trace)

    def chat_complete(self, body: dict[str, Any], trace: Trace) -> ChatAnswer:
        attempts = self._plan(body, "chat", trace)
        reservation, completion = self._run(attempts, lambda p, m: _finished(p.complete(body), m))
        usage = completion.body.get("usage")
        trace.usage = usage if isinstance(usage, dict) else None
        self._succeeded(reservation, completion.headers, _total_tokens(trace.usage), trace)
        model = reservation.model
        return ChatAnswer(completion.body, model, self.router.ratelimit_headers(model))

    def chat_stream(self, body: dict[str, Any], trace: Trace) -> StreamAnswer:
        """Open a stream and read it up to its first content, retrying and falling back on the way;
        only then is the answer returned, so its headers name the model that serves. Errors before
        that are ordinary HTTP errors. If no content has come after `heartbeat_seconds`, the answer
        starts anyway with heartbeats (no proxy or load balancer in between gives up on the first
        byte), the opening goes on behind them, and a later failure is a StreamFailed event."""
        attempts = self._plan(body, "chat", trace)
        if self._heartbeat <= 0:
            return self._streaming(attempts, self._open(attempts, body))
        opening = self._streams.submit(self._open, attempts, body)
        try:
            opened = opening.result(timeout=self._heartbeat)
        except TimeoutError:
            model = next((m for m in attempts.candidates if m.name == trace.served), attempts.candidates[0])
            events = self._relay_when_open(attempts, opening)
            return StreamAnswer(model, self.router.ratelimit_headers(model), events)
        return self._streaming(attempts, opened)

    def image(self, body: dict[str, Any], trace: Trace) -> ImageAnswer:
        prompt = body.get("prompt")
        attempts = self._plan_for(str(body.get("model") or ""), "image", len(prompt or ""), 0, trace)
        reservation, result = self._run(attempts, lambda p, m: p.generate_image(body))
        self._succeeded(reservation, result.headers, None, trace)
        return ImageAnswer(result, reservation.model, self.router.ratelimit_headers(reservation.model))

    def embed(self, inputs: list[Any], body: dict[str, Any], trace: Trace) -> EmbeddingAnswer:
        """Vectors of `inputs` (strings or token arrays). They go upstream in batches no larger than
        any candidate takes; each batch is one routed request (its own quota count, retries and
        fallback, within one embedding space); any batch failing fails the whole request."""
        attempts = self._plan_for(str(body.get("model") or ""), EMBEDDING, 0, 0, trace)
        candidates = attempts.candidates
        if not all(isinstance(item, str) for item in inputs):
            candidates = [m for m in candidates if embedding_shape(m.provider, m.url) == OPENAI_EMBEDDINGS]
            if not candidates:
                names = ", ".join(m.name for m in attempts.candidates)
                raise InvalidRequest(
                    f"Model {names} takes text only: give 'input' as a string or a list of strings",
                    param="input",
                )
        size = min(m.max_batch or embedding_batch(m.provider, m.url) for m in candidates)
        vectors: list[list[float]] = []
        total = 0
        reservation = None
        for start in range(0, len(inputs), size):
            batch = inputs[start : start + size]
            estimate = embedding_tokens(batch)
            plan = _Attempts(candidates, attempts.concrete, input_length(batch), estimate, trace)
            reservation, result = self._run(plan, partial(_embed_batch, batch, body))
            counted = estimate if result.prompt_tokens is None else result.prompt_tokens
            trace.usage = {"prompt_tokens": counted, "total_tokens": counted}  # this batch's, for its client
            self._succeeded(reservation, result.headers, counted, trace)
            vectors.extend(result.vectors)
            total += counted
        assert reservation is not None  # inputs are never empty (the front API checks)
        trace.usage = {"prompt_tokens": total, "total_tokens": total}
        model = reservation.model
        return EmbeddingAnswer(vectors, total, model, self.router.ratelimit_headers(model))

    def transcribe(self, audio: Any, body: dict[str, Any], trace: Trace) -> TranscriptAnswer:
        """A transcript of `audio` (re-readable for a retry or fallback); one routed request."""
        prompt = body.get("prompt") or ""
        attempts = self._plan_for(str(body.get("model") or ""), TRANSCRIPTION, len(prompt), 0, trace)
        reservation, result = self._run(attempts, lambda p, m: p.transcribe(audio, body))
        self._succeeded(reservation, result.headers, None, trace)
        model = reservation.model
        return TranscriptAnswer(result, model, self.router.ratelimit_headers(model))

    # --- routing loop ------------------------------------------------------------------------
    def _plan(self, body: dict[str, Any], kind: str, trace: Trace) -> _Attempts:
        length = request_length(body["messages"])
        budget = max_tokens(body)
        tokens = estimate_tokens(length, budget if isinstance(budget, int) else None)
        return self._plan_for(body["model"], kind, length, tokens, trace)

    def _plan_for(self, name: str, kind: str, length: int, tokens: int, trace: Trace) -> _Attempts:
        trace.asked = name
        if trace.client_gone is not None and trace.client_gone():  # it waited in the server's queue
            raise ClientClosedRequest("The client closed the connection before the request was routed")
        if name:
            self._check_kind(name, kind)
            candidates = self.router.resolve(name, kind)
        else:  # no model named (allowed for images): any enabled model of that kind
            candidates = [m for m in self.config.enabled_models if m.kind == kind]
            if not candidates:
                raise ModelNotFound(f"No {kind} model is configured", param="model")
        if trace.client is not None:
            candidates = trace.client.allowed(name, candidates)
        concrete = len(candidates) == 1 and candidates[0].name == name
        return _Attempts(candidates, concrete, length, tokens, trace)

    def _check_kind(self, name: str, kind: str) -> None:
        """A model (or group) of another kind named where an embedding or transcription model is
        wanted, or the other way round: a 400 that names its kind."""
        exact = self._model_kinds.get(name)
        kinds = {exact} if exact else self._group_kinds.get(name.upper(), set())
        if not kinds or kind in kinds or not ({kind} | kinds) & KIND_CHECKED:
            return
        what = " and ".join(_a(k) for k in sorted(kinds))
        raise InvalidRequest(f"Model '{name}' is {what} model, not {_a(kind)} model", param="model")

    def _run(self, attempts: _Attempts, call: Callable[[Provider, ModelConfig], T]) -> tuple[Reservation, T]:
        """Acquire a model and call it; on a retryable failure fall back to the next model. A
        request that fails for good gives its client back the tokens it reserved."""
        try:
            return self._serve(attempts, call)
        except ProxyError:
            if attempts.charge is not None:
                self.router.refund_client(attempts.charge)
            raise

    def _serve(
        self, attempts: _Attempts, call: Callable[[Provider, ModelConfig], T]
    ) -> tuple[Reservation, T]:
        trace = attempts.trace
        client = trace.client.plan if trace.client is not None else None
        while True:
            reservation = self._acquire(attempts, client)
            attempts.charge = reservation.client
            model = reservation.model
            if attempts.tried:
                trace.fallbacks += 1
            trace.served, trace.key, trace.provider = model.name, reservation.key_label, model.provider
            try:
                return reservation, self._call_with_retries(attempts, reservation, call)
            except ProxyError as exc:
                self._give_up_on(attempts, reservation, exc)

    def _acquire(self, attempts: _Attempts, client: ClientPlan | None) -> Reservation:
        """The next slot to call: after a key failure, another key of the same model if one can
        serve, else the best slot of any candidate not tried yet."""
        preferred, attempts.next_key_of = attempts.next_key_of, None
        ask = {
            "length": attempts.length,
            "tokens": attempts.tokens,
            "exclude": attempts.tried,
            "client": client,
            "charged": attempts.charge,
        }
        if preferred is not None and not attempts.concrete:
            with contextlib.suppress(ProxyError):  # none of its keys can serve: any candidate may
                return self.router.acquire([preferred], **ask)
        try:
            return self.router.acquire(attempts.candidates, **ask)
        except ProxyError as exc:
            raise self._exhausted(attempts, exc) from None

    def _give_up_on(self, attempts: _Attempts, reservation: Reservation, exc: ProxyError) -> None:
        """Report a failed slot to the router; raise when the request can't fall back any further.
        A failure that is the key's (it carries a cooldown: 429, 401, 402, 403) excludes only that
        slot and moves to the model's next key, for a concrete model too; any other excludes the model.
        `routing.max_attempts` bounds the upstream calls of the whole request."""
        model = reservation.model
        log.info("model %s failed: %s (key=%s)", model.name, exc.message, reservation.key_label)
        self.router.failed(reservation, exc)
        attempts.failures.append((reservation.slot if len(model.keys) > 1 else model.name, exc))
        key_failure = exc.cooldown is not None
        if key_failure:
            attempts.tried.append(reservation.slot)
            attempts.next_key_of = model
        else:
            attempts.tried.append(model.name)
        if not (exc.retryable or key_failure):
            raise self._exhausted(attempts, None)
        if attempts.concrete and not (key_failure and len(model.keys) > 1):
            raise self._exhausted(attempts, None)
        if attempts.trace.attempts >= max(self.config.routing.max_attempts, 1):
            raise self._exhausted(attempts, None)

    def _call_with_retries(
        self, attempts: _Attempts, reservation: Reservation, call: Callable[[Provider, ModelConfig], T]
    ) -> T:
        """A concrete model is retried with backoff and full jitter; a group falls back instead.
        The provider is the one holding the reservation's key."""
        model = reservation.model
        provider = self.providers[model.name if reservation.key_label == "#1" else reservation.slot]
        trace = attempts.trace
        while True:
            trace.attempts += 1
            started = time.perf_counter()
            try:
                return call(provider, model)
            except Exception as exc:  # the error boundary: see _upstream_failure
                failure = self._upstream_failure(exc, model)
            finally:
                trace.upstream_ms += (time.perf_counter() - started) * 1000.0
            if not self._may_retry(attempts, model, failure):
                raise failure
            self._backoff(trace.attempts - 1, failure)

    def _upstream_failure(self, exc: Exception, model: ModelConfig) -> ProxyError:
        """What a provider raised, safe to store, render and log: a ProxyError keeps its type with its
        message redacted (an upstream may echo a key); anything else is a retryable UpstreamError
        that names the model, and one WARNING line with the exception's type (never a traceback)."""
        if isinstance(exc, ProxyError):
            message = self.redact(exc.message)
            if message != exc.message:
                exc.message = message
                exc.args = (message,)
            return exc
        log.warning(
            "model %s: the provider raised %s; treated as an upstream error", model.name, type(exc).__name__
        )
        return UpstreamError(f"Upstream for model {model.name} sent an answer the proxy could not read")

    def _may_retry(self, attempts: _Attempts, model: ModelConfig, exc: ProxyError) -> bool:
        """Same-model retries: concrete models only, transient failures only. A 429 is retried
        only when the upstream asks for a wait no longer than `retry.max_delay`."""
        if not (attempts.concrete and exc.retryable):
            return False
        if exc.cooldown is not None and len(model.keys) > 1:  # the key's failure: the next key serves
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

    def _succeeded(
        self, reservation: Reservation, headers: Mapping[str, str], used_tokens: int | None, trace: Trace
    ) -> None:
        """Settle an answered request; its client's usage is recorded in the same storage step."""
        client = trace.client.name if trace.client is not None else None
        self.router.succeeded(reservation, headers, used_tokens, client=client, usage=trace.usage)

    def _record_usage(self, trace: Trace) -> None:
        """One answered request in its client's usage, with the tokens the upstream reported."""
        if trace.client is not None:
            self.router.record_usage(trace.client.name, trace.served, trace.usage)

    # --- streaming ---------------------------------------------------------------------------
    def _open(self, attempts: _Attempts, body: dict[str, Any]) -> Opened:
        """A stream that has sent content. A failure before content (opening, a broken or empty
        stream) is retried or falls back like any failed call: the client has seen nothing yet."""
        return self._run(attempts, lambda p, m: self._read_head(p.stream(body), m, attempts))

    def _read_head(self, stream: ChunkStream, model: ModelConfig, attempts: _Attempts) -> _Upstream:
        upstream = _Upstream(stream, model)
        try:
            for chunk in upstream.chunks:
                upstream.prepare(chunk)
                upstream.head.append(chunk)
                if has_content(chunk):
                    attempts.trace.first_token_ms = (time.perf_counter() - attempts.started) * 1000.0
                    return upstream
        except BaseException:
            _close(stream)
            raise
        _close(stream)
        raise UpstreamError(f"Upstream stream for model {model.name} ended without content")

    def _streaming(self, attempts: _Attempts, opened: Opened) -> StreamAnswer:
        model = opened[0].model
        return StreamAnswer(model, self.router.ratelimit_headers(model), self._relay(attempts, *opened))

    def _relay(
        self, attempts: _Attempts, reservation: Reservation, upstream: _Upstream
    ) -> Iterator[StreamEvent]:
        """The head, then each chunk as it arrives (the usage chunk included). Content has reached
        the client by now, so a failure ends the stream with StreamFailed, never silently."""
        trace = attempts.trace
        try:
            yield from upstream.head
            for chunk in self._with_heartbeat(upstream.chunks):
                if chunk is not HEARTBEAT:
                    upstream.prepare(chunk)
                yield chunk
        except Exception as exc:
            error = self._upstream_failure(exc, reservation.model)
            self.router.failed(reservation, error)
            trace.stream_error = error.message
            self._record_usage(trace)  # the client got part of an answer
            yield StreamFailed(error)
            return
        finally:
            _close(upstream.stream)
        trace.usage = upstream.usage if isinstance(upstream.usage, dict) else None
        self._succeeded(reservation, upstream.stream.headers, _total_tokens(trace.usage), trace)

    def _relay_when_open(self, attempts: _Attempts, opening: Future[Opened]) -> Iterator[StreamEvent]:
        """Heartbeats until a model has sent content, then the relay; no model able to is a StreamFailed."""
        try:
            opened = yield from self._heartbeats_until(opening)
        except ProxyError as exc:
            attempts.trace.stream_error = exc.message
            yield StreamFailed(exc)
            return
        yield from self._relay(attempts, *opened)

    def _heartbeats_until(self, opening: Future[Opened]) -> Generator[StreamEvent, None, Opened]:
        """A heartbeat at once (`heartbeat_seconds` have passed already), then one every
        `heartbeat_seconds` until the background open is done; its result. If the client leaves
        first, the stream is closed as soon as it opens."""
        taken = False
        try:
            yield HEARTBEAT
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

    def _with_heartbeat(self, chunks: Iterator[dict[str, Any]]) -> Iterator[Any]:
        """Chunks from the upstream, with HEARTBEAT every `heartbeat_seconds` the upstream is silent."""
        if self._heartbeat <= 0:
            yield from chunks
            return
        inbox: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()

        def pump() -> None:
            try:
                for chunk in chunks:
                    inbox.put((0, chunk))
                inbox.put((1, None))
            except BaseException as exc:  # handed to the consumer thread and raised there
                inbox.put((2, exc))

        self._streams.submit(pump)  # a pooled thread: starting a new one per stream costs ~0.1 ms
        while True:
            try:
                kind, value = inbox.get(timeout=self._heartbeat)
            except queue.Empty:
                yield HEARTBEAT
                continue
            if kind == 0:
                yield value
            elif kind == 1:
                return
            else:
                raise value


def _finished(completion: Completion, model: ModelConfig) -> Completion:
    """A whole answer named after the model that served, in that model's reasoning mode (inside the
    error boundary: an answer of the wrong shape fails here as an upstream error)."""
    answer = completion.body
    answer["model"] = model.name
    if model.reasoning != "keep":
        split_reasoning(answer, model.reasoning)
    return completion


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _embed_batch(batch: list[Any], body: dict[str, Any], provider: Provider, model: ModelConfig) -> Any:
    return provider.embed(batch, body)


def _close(stream: ChunkStream) -> None:
    """Free an upstream stream. Closing must never raise: it runs on the way to an error event."""
    with contextlib.suppress(Exception):
        stream.close()


def _close_opened(opening: Future[Opened]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        _close(opening.result()[1].stream)


def _total_tokens(usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt + completion
    return None
