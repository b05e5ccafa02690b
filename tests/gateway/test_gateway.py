"""The gateway's own logic in-process: events, retries and fallback before content, the served model
in the headers, heartbeats while opening, and the error boundary. Scripted providers, an injected
sleep and jitter, no clock."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from app.config import Config, parse_config
from app.errors import ProxyError, UpstreamBadRequest, UpstreamError
from app.events import HEARTBEAT, StreamFailed
from app.gateway import ChatAnswer, Gateway, StreamAnswer, Trace
from app.redact import Redactor
from app.routing import Router, create_storage
from tests.gateway.fakes import WORDS, ScriptedProvider, Step, chunk, usage_chunk

CANARY = "sk-canary-upstream-7d1e0b5a"


def model_entry(name: str, priority: int, rpm: int) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "openai",
        "url": "http://127.0.0.1:9/v1/chat/completions",
        "token": CANARY,
        "priority": priority,
        "requests_per_minute": rpm,
        "model_size": "SMALL",
    }


class Rig:
    """A gateway over two models of group SMALL (`fake/a` first, then `fake/b`) with scripted providers."""

    def __init__(self, heartbeat: float = 0, retries: int = 3, **steps: list[Step]) -> None:
        raw = {
            "models": [model_entry("fake/a", 1, 7), model_entry("fake/b", 2, 9)],
            "server": {"heartbeat_seconds": heartbeat},
            "retry": {"max_attempts": retries, "base_delay": 0.5, "max_delay": 4},
            "routing": {"max_attempts": 2, "cooldown_seconds": 30},
        }
        self.config: Config = parse_config(raw, {})
        self.router = Router(
            self.config.models, create_storage("memory"), self.config.routing, self.config.breaker
        )
        models = {m.name: m for m in self.config.models}
        self.providers = {
            name: ScriptedProvider(models[name], *steps.get(name.split("/")[1], [])) for name in models
        }
        self.sleeps: list[float] = []
        self.gateway = Gateway(
            self.config,
            self.router,
            self.providers,
            redactor=Redactor([CANARY]),
            sleep=self.sleeps.append,
            jitter=lambda: 1.0,
        )
        self.trace = Trace()

    def chat(self, model: str = "SMALL", stream: bool = True) -> ChatAnswer | StreamAnswer:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        return self.gateway.chat(body, self.trace)

    def last_error(self, name: str) -> str | None:
        entry = next(e for e in self.router.snapshot() if e["name"] == name)
        return (entry["last_error"] or {}).get("message")


def test_stream_events_are_chunks_named_after_the_server_usage_included() -> None:
    rig = Rig()
    answer = rig.chat("fake/a")
    assert isinstance(answer, StreamAnswer)
    events = list(answer.events)
    assert events == [{**c, "model": "fake/a"} for c in WORDS]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] == 12
    assert rig.trace.usage == WORDS[-1]["usage"] and rig.trace.first_token_ms is not None
    assert answer.headers["x-ratelimit-limit-requests"] == "7"


def test_plain_chat_is_a_chat_answer_named_after_the_server() -> None:
    rig = Rig()
    answer = rig.chat("SMALL", stream=False)
    assert isinstance(answer, ChatAnswer)
    assert answer.body["model"] == "fake/a" and answer.model.name == "fake/a"
    assert answer.body["choices"][0]["message"]["content"] == "Hello!"


@pytest.mark.parametrize(
    "failure",
    [
        Step(error=UpstreamError("refused")),
        Step(chunks=[chunk(role=True), UpstreamError("broke off")]),
        Step(chunks=[chunk(role=True), chunk(finish="stop"), usage_chunk()]),  # no content at all
        Step(error=AttributeError("'list' object has no attribute 'get'")),
        Step(chunks=[chunk(role=True), KeyError("choices")]),
    ],
    ids=["refused", "broken before content", "no content", "exception at open", "exception before content"],
)
def test_failure_before_content_falls_back_and_the_headers_name_the_server(failure: Step) -> None:
    rig = Rig(a=[failure])
    answer = rig.chat("SMALL")
    assert isinstance(answer, StreamAnswer)
    assert answer.model.name == "fake/b"
    assert answer.headers["x-ratelimit-limit-requests"] == "9"  # fake/b's quota, not fake/a's (7)
    events = list(answer.events)
    assert {e["model"] for e in events} == {"fake/b"}
    assert sum(1 for e in events if e["choices"] and "role" in e["choices"][0]["delta"]) == 1
    assert (rig.trace.served, rig.trace.fallbacks) == ("fake/b", 1)
    assert rig.last_error("fake/a")


def test_concrete_model_retries_before_content_with_backoff() -> None:
    broken = Step(chunks=[chunk(role=True), UpstreamError("broke off")])
    rig = Rig(a=[broken, broken, Step()])
    events = list(rig.chat("fake/a").events)
    assert [e["model"] for e in events] == ["fake/a"] * len(WORDS)
    assert rig.providers["fake/a"].calls == 3
    assert rig.sleeps == [0.5, 1.0]  # base_delay * 2**n with jitter 1.0
    assert rig.trace.attempts == 3


def test_exception_from_a_plain_call_is_a_502_after_retries_logged_in_one_line() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("ai_proxy.gateway")
    logger.addHandler(handler)
    try:
        rig = Rig(retries=2, a=[Step(error=TypeError("list indices must be integers"))])
        with pytest.raises(ProxyError) as info:
            rig.chat("fake/a", stream=False)
    finally:
        logger.removeHandler(handler)
    assert isinstance(info.value, UpstreamError) and info.value.status == 502
    assert "fake/a" in info.value.message and "list indices" not in info.value.message
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per attempt
    assert all("TypeError" in r.getMessage() and r.exc_info is None for r in warnings)
    assert rig.sleeps == [0.5]


def test_failure_after_content_is_the_last_event() -> None:
    rig = Rig(a=[Step(chunks=[chunk(role=True), chunk("Hel"), ValueError("bad event")])])
    events = list(rig.chat("SMALL").events)
    assert [e["choices"][0]["delta"].get("content") for e in events[:-1]] == ["", "Hel"]
    failed = events[-1]
    assert isinstance(failed, StreamFailed) and isinstance(failed.error, UpstreamError)
    assert rig.providers["fake/b"].calls == 0  # content was sent: no fallback behind the client
    assert rig.trace.stream_error == failed.error.message
    assert rig.providers["fake/a"].closed.is_set()


def test_upstream_messages_are_redacted_before_they_are_stored_or_raised() -> None:
    echo = f"Incorrect API key provided: {CANARY}; header was 'Authorization: Bearer {CANARY}'"
    rig = Rig(a=[Step(error=UpstreamBadRequest(echo))])
    with pytest.raises(UpstreamBadRequest) as info:
        rig.chat("fake/a", stream=False)
    assert CANARY not in info.value.message and "[redacted]" in info.value.message
    assert CANARY not in str(info.value)
    stored = rig.last_error("fake/a")
    assert stored is not None and CANARY not in stored and "[redacted]" in stored


def test_mid_stream_error_is_redacted_too() -> None:
    rig = Rig(a=[Step(chunks=[chunk(role=True), chunk("Hi"), UpstreamError(f"key {CANARY} revoked")])])
    failed = list(rig.chat("fake/a").events)[-1]
    assert isinstance(failed, StreamFailed)
    assert CANARY not in failed.error.message and "[redacted]" in failed.error.message
    assert CANARY not in (rig.last_error("fake/a") or "") and CANARY not in (rig.trace.stream_error or "")


def test_slow_open_starts_with_heartbeats_then_relays() -> None:
    gate = threading.Event()
    rig = Rig(heartbeat=0.02, a=[Step(gate=gate)])
    answer = rig.chat("SMALL")  # returns before any content: the opening waits for the gate
    assert answer.model.name == "fake/a"
    events = iter(answer.events)
    assert next(events) is HEARTBEAT
    gate.set()
    rest = list(events)
    chunks = [e for e in rest if e is not HEARTBEAT]
    assert chunks == [{**c, "model": "fake/a"} for c in WORDS]
    assert all(e is HEARTBEAT for e in rest[: rest.index(chunks[0])])


def test_slow_open_that_fails_everywhere_ends_with_stream_failed() -> None:
    gate = threading.Event()
    rig = Rig(
        heartbeat=0.02,
        a=[Step(gate=gate, error=UpstreamError("down"))],
        b=[Step(error=UpstreamError("down too"))],
    )
    events = iter(rig.chat("SMALL").events)
    assert next(events) is HEARTBEAT
    gate.set()
    rest = list(events)
    assert all(e is HEARTBEAT for e in rest[:-1])
    assert isinstance(rest[-1], StreamFailed) and "fake/a" in rest[-1].error.message


def test_heartbeats_while_the_upstream_is_silent_after_content() -> None:
    gate = threading.Event()
    rig = Rig(heartbeat=0.02, a=[Step(chunks=[*WORDS[:2], gate, *WORDS[2:]])])
    events = iter(rig.chat("fake/a").events)
    head = [next(events), next(events)]
    assert [e["choices"][0]["delta"].get("content") for e in head] == ["", "Hel"]
    assert next(events) is HEARTBEAT
    gate.set()
    rest = [e for e in events if e is not HEARTBEAT]
    assert [e["model"] for e in rest] == ["fake/a"] * 3


def test_client_leaving_during_heartbeats_closes_the_stream_once_open() -> None:
    gate = threading.Event()
    rig = Rig(heartbeat=0.02, a=[Step(gate=gate)])
    events = rig.chat("SMALL").events
    assert next(events) is HEARTBEAT
    events.close()  # type: ignore[attr-defined]
    gate.set()
    assert rig.providers["fake/a"].closed.wait(10)


def test_unusable_usage_is_ignored() -> None:
    weird = {**usage_chunk(), "usage": ["not", "a", "dict"]}
    rig = Rig(a=[Step(chunks=[chunk(role=True), chunk("x"), chunk(finish="stop"), weird])])
    events = list(rig.chat("fake/a").events)
    assert not any(isinstance(e, StreamFailed) for e in events)
    assert rig.trace.usage is None
