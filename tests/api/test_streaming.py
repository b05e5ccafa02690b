"""Streaming resilience in process: retry before content, error events after it, heartbeats and stalls.
Retry waits are recorded, not slept. (What a hung-up client leaves in a gunicorn worker:
tests/ops/test_streaming.py.)"""

from __future__ import annotations

import openai
import pytest

from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import Behavior, sse
from tests.harness import free_port
from tests.ops.conftest import FAST_ENV, app_stream, chat_body, config, model

WORDS = ["One", " two", " three", " four", " five"]
# Timeouts far apart from the fakes' delays, so that no outcome depends on the machine's load.
FAST_HTTP = {"connect_timeout": 2, "read_timeout": 5, "stream_idle_timeout": 2}


def assert_complete(result, text: str = "".join(WORDS)) -> None:
    assert result.status == 200, result.datas
    assert result.errors == []
    assert result.content == text
    assert result.datas[-1] == "[DONE]"
    assert result.complete


# -- before any content: invisible retries --------------------------------------------------------


FAILURES = {
    "reset before the answer": Behavior(drop=True),
    "HTTP 500": "server_error",
    "HTTP 502": "bad_gateway",
    "read timeout": "timeout",
    "stream without content": Behavior(events=[sse("[DONE]")]),
    "broken off before content": "drop_after_role",
}


def push_failure(fake: FakeOpenAI, kind: str) -> None:
    what = FAILURES[kind]
    if isinstance(what, Behavior):
        fake.push("chat", what)
    elif what == "timeout":  # headers far later than http.stream_idle_timeout (2 s)
        fake.push_chat(delay=30)
    elif what == "drop_after_role":
        fake.push_chat(content=WORDS, drop_after=1)
    else:
        fake.push_error(what)


def test_concrete_model_retries_every_failure_before_content(in_process, fake_openai):
    cfg = config(model(fake_openai.chat_url, "fake/concrete"), http=FAST_HTTP, retry={"max_attempts": 3})
    proxy = in_process(cfg, env=FAST_ENV)
    for kind in FAILURES:
        before = len(fake_openai.chat_requests)
        push_failure(fake_openai, kind)
        fake_openai.push_chat(content=WORDS)
        result = app_stream(proxy, chat_body("fake/concrete"))
        assert_complete(result)
        assert len(fake_openai.chat_requests) - before == 2, kind
    assert len(proxy.sleeps) == len(FAILURES)  # one backoff before each retry


def test_concrete_model_gives_up_after_max_attempts(in_process, fake_openai):
    proxy = in_process(
        config(model(fake_openai.chat_url, "fake/concrete"), retry={"max_attempts": 3}), env=FAST_ENV
    )
    for _ in range(3):
        fake_openai.push_error("server_error")
    fake_openai.push_chat(content=WORDS)  # never reached
    result = app_stream(proxy, chat_body("fake/concrete"))
    assert result.status == 502
    assert result.datas[0]["error"]["type"] == "upstream_error"
    assert len(fake_openai.chat_requests) == 3
    assert len(proxy.sleeps) == 2


def test_retry_backoff_is_full_jitter_bounded_by_max_delay(in_process, fake_openai):
    """Each wait is random in [0, min(max_delay, base * 2**n)]."""
    cfg = config(model(fake_openai.chat_url, "fake/concrete"), retry={"max_attempts": 4})
    env = {**FAST_ENV, "AI_PROXY_RETRY_BASE_DELAY": "0.2", "AI_PROXY_RETRY_MAX_DELAY": "0.3"}
    proxy = in_process(cfg, env=env)
    for _ in range(3):
        fake_openai.push_error("server_error")
    fake_openai.push_chat(content=WORDS)
    assert_complete(app_stream(proxy, chat_body("fake/concrete")))
    assert len(proxy.sleeps) == 3
    for attempt, wait in enumerate(proxy.sleeps):
        assert 0 <= wait <= min(0.3, 0.2 * 2**attempt), proxy.sleeps
    assert len(fake_openai.chat_requests) == 4


def test_group_falls_back_to_the_next_model_invisibly(in_process):
    """One group whose models fail in every way before content; each request ends on a good one."""
    kinds = ["connection refused", *FAILURES, "HTTP 429"]
    with FakeOpenAI() as fake:
        models = [model(fake.chat_url, f"fake/m{i}", priority=i) for i in range(len(kinds))]
        models[0]["url"] = f"http://127.0.0.1:{free_port()}/v1/chat/completions"  # nothing listens
        models.append(model(fake.chat_url, "fake/last", priority=len(kinds)))
        cfg = config(
            *models,
            http=FAST_HTTP,
            retry={"max_attempts": 1},
            routing={"max_attempts": 2, "cooldown_seconds": 60},
        )
        proxy = in_process(cfg, env=FAST_ENV)
        for index, kind in enumerate(kinds):
            if kind == "HTTP 429":
                fake.push_error("rate_limit", retry_after=60)
            elif kind != "connection refused":
                push_failure(fake, kind)
            fake.push_chat(content=WORDS)
            result = app_stream(proxy, chat_body("SMALL"))
            assert_complete(result)
            served = {d["model"] for d in result.datas if isinstance(d, dict)}
            assert served == {f"fake/m{index + 1}" if index + 1 < len(kinds) else "fake/last"}, kind
        assert proxy.sleeps == []  # a fallback goes to the next model at once


# -- after content: an error event and [DONE], never a silent end ----------------------------------


@pytest.mark.parametrize("fault", ["drop", "stall", "upstream error event"])
def test_failure_after_content_ends_with_error_event_and_done(in_process, fake_openai, fault):
    stall_for = 30.0
    proxy = in_process(config(model(fake_openai.chat_url, "fake/concrete"), http=FAST_HTTP), env=FAST_ENV)
    if fault == "drop":
        fake_openai.push_chat(content=WORDS, drop_after=3)
    elif fault == "stall":
        fake_openai.push_chat(content=WORDS, stall_after=3, stall_for=stall_for)
    else:
        fake_openai.push_chat(content=WORDS, error_after=2)
    result = app_stream(proxy, chat_body("fake/concrete"))
    assert result.status == 200
    assert result.content == "One two"
    assert len(result.errors) == 1
    assert result.errors[0]["message"] and result.errors[0]["type"]
    assert result.datas[-2:] == [{"error": result.errors[0]}, "[DONE]"]
    assert result.complete
    # A stall is cut after stream_idle_timeout (2 s), never waited out: far sooner than the stall.
    assert result.events[-1].at - result.started < stall_for / 2
    assert len(fake_openai.chat_requests) == 1  # content was sent: no retry behind the client's back


def test_openai_sdk_sees_the_mid_stream_failure(in_process, fake_openai):
    proxy = in_process(config(model(fake_openai.chat_url, "fake/concrete")), env=FAST_ENV)
    fake_openai.push_chat(content=WORDS, drop_after=3)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in proxy.openai(FAST_ENV["AI_PROXY_API_KEYS"]).chat.completions.create(
            model="fake/concrete", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "One" in received


# -- heartbeats -------------------------------------------------------------------------------------
# heartbeat_seconds is 0.1 and the upstream's silences 10 to 20 times longer: the counts asserted are
# a fraction of the expected ones, so that a loaded machine cannot make them fail.

HEARTBEAT = {"heartbeat_seconds": 0.1}


def test_heartbeats_while_the_upstream_thinks(in_process, fake_openai):
    """Headers came, first token late: a comment line every heartbeat_seconds meanwhile."""
    cfg = config(model(fake_openai.chat_url, "fake/concrete"), server=HEARTBEAT)
    proxy = in_process(cfg, env=FAST_ENV)
    fake_openai.push_chat(content=WORDS, stall_after=1, stall_for=1.5)
    result = app_stream(proxy, chat_body("fake/concrete"))
    assert_complete(result)
    first = result.first_content_at()
    early = [e for e in result.comments if e.at < first]
    assert len(early) >= 3, [e.raw for e in result.events]
    assert all(e.raw == b": keep-alive" for e in early)


def test_heartbeats_while_the_upstream_has_not_answered_yet(in_process, fake_openai):
    """The upstream sends even its headers late (queued, cold start): the client's first bytes are a
    heartbeat sent before the upstream answered at all."""
    cfg = config(model(fake_openai.chat_url, "fake/concrete"), server=HEARTBEAT)
    proxy = in_process(cfg, env=FAST_ENV)
    fake_openai.push_chat(content=WORDS, delay=1.5)
    result = app_stream(proxy, chat_body("fake/concrete"))
    assert_complete(result)
    (upstream,) = fake_openai.chat_requests
    assert result.events[0].raw == b": keep-alive"
    assert result.events[0].at < upstream.headers_sent_at
    assert len([e for e in result.comments if e.at < result.first_content_at()]) >= 3


def test_slow_open_that_fails_becomes_an_error_event(in_process, fake_openai):
    """Once heartbeats went out the status is 200: a later failure before content is an error event."""
    cfg = config(model(fake_openai.chat_url, "fake/concrete"), retry={"max_attempts": 1}, server=HEARTBEAT)
    proxy = in_process(cfg, env=FAST_ENV)
    fake_openai.push_error("server_error")
    fake_openai.routes["chat"].script[0].delay = 1.0
    result = app_stream(proxy, chat_body("fake/concrete"))
    assert result.status == 200
    assert result.comments
    assert result.errors and result.errors[0]["type"] == "upstream_error"
    assert result.datas[-1] == "[DONE]"


def test_fast_failures_keep_their_http_status(in_process, fake_openai):
    proxy = in_process(
        config(model(fake_openai.chat_url, "fake/concrete"), retry={"max_attempts": 1}), env=FAST_ENV
    )
    fake_openai.push_error("invalid_request")
    assert app_stream(proxy, chat_body("fake/concrete")).status == 400
    assert app_stream(proxy, chat_body("no/such-model")).status == 404
