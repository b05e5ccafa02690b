"""Streaming resilience through a real gunicorn: retry before content, error events after it,
heartbeats, stalls, and what a client that hangs up leaves behind."""

from __future__ import annotations

import itertools
import socket
import time

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import Behavior, sse
from tests.harness import free_port
from tests.ops.conftest import (
    FAST_ENV,
    chat_body,
    config,
    get,
    model,
    open_stream,
    proc_usage,
    read_events,
    stream,
    wait_until,
)

pytestmark = pytest.mark.e2e

WORDS = ["One", " two", " three", " four", " five"]


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
    elif what == "timeout":  # headers later than http.stream_idle_timeout (1 s)
        fake.push_chat(delay=2.5)
    elif what == "drop_after_role":
        fake.push_chat(content=WORDS, drop_after=1)
    else:
        fake.push_error(what)


def test_concrete_model_retries_every_failure_before_content(gunicorn_server, fake_openai):
    cfg = config(
        model(fake_openai.chat_url, "fake/concrete"),
        http={"connect_timeout": 1, "read_timeout": 5, "stream_idle_timeout": 1},
        retry={"max_attempts": 3},
    )
    server = gunicorn_server(cfg, env=FAST_ENV)
    for kind in FAILURES:
        before = len(fake_openai.chat_requests)
        push_failure(fake_openai, kind)
        fake_openai.push_chat(content=WORDS)
        result = stream(server.port, chat_body("fake/concrete"))
        assert_complete(result)
        assert len(fake_openai.chat_requests) - before == 2, kind


def test_concrete_model_gives_up_after_max_attempts(gunicorn_server, fake_openai):
    cfg = config(model(fake_openai.chat_url, "fake/concrete"), retry={"max_attempts": 3})
    server = gunicorn_server(cfg, env=FAST_ENV)
    for _ in range(3):
        fake_openai.push_error("server_error")
    fake_openai.push_chat(content=WORDS)  # never reached
    result = stream(server.port, chat_body("fake/concrete"))
    assert result.status == 502
    assert result.datas[0]["error"]["type"] == "upstream_error"
    assert len(fake_openai.chat_requests) == 3


def test_retry_backoff_is_bounded_by_max_delay(gunicorn_server, fake_openai):
    """Full jitter: each wait is random in [0, min(max_delay, base * 2**n)]; 4 tries < 3 * max_delay."""
    cfg = config(model(fake_openai.chat_url, "fake/concrete"), retry={"max_attempts": 4})
    env = {**FAST_ENV, "AI_PROXY_RETRY_BASE_DELAY": "0.2", "AI_PROXY_RETRY_MAX_DELAY": "0.3"}
    server = gunicorn_server(cfg, env=env)
    for _ in range(3):
        fake_openai.push_error("server_error")
    fake_openai.push_chat(content=WORDS)
    started = time.monotonic()
    assert_complete(stream(server.port, chat_body("fake/concrete")))
    assert time.monotonic() - started < 3 * 0.3 + 1.0
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(fake_openai.chat_requests)]
    assert len(gaps) == 3 and all(gap < 0.3 + 0.25 for gap in gaps), gaps


def test_group_falls_back_to_the_next_model_invisibly(gunicorn_server):
    """One group whose models fail in every way before content; each request ends on a good one."""
    kinds = ["connection refused", *FAILURES, "HTTP 429"]
    with FakeOpenAI() as fake:
        models = [model(fake.chat_url, f"fake/m{i}", priority=i) for i in range(len(kinds))]
        models[0]["url"] = f"http://127.0.0.1:{free_port()}/v1/chat/completions"  # nothing listens
        models.append(model(fake.chat_url, "fake/last", priority=len(kinds)))
        cfg = config(
            *models,
            http={"connect_timeout": 1, "read_timeout": 5, "stream_idle_timeout": 1},
            retry={"max_attempts": 1},
            routing={"max_attempts": 2, "cooldown_seconds": 60},
        )
        server = gunicorn_server(cfg, env=FAST_ENV)
        for index, kind in enumerate(kinds):
            if kind == "HTTP 429":
                fake.push_error("rate_limit", retry_after=60)
            elif kind != "connection refused":
                push_failure(fake, kind)
            fake.push_chat(content=WORDS)
            result = stream(server.port, chat_body("SMALL"))
            assert_complete(result)
            served = {d["model"] for d in result.datas if isinstance(d, dict)}
            assert served == {f"fake/m{index + 1}" if index + 1 < len(kinds) else "fake/last"}, kind


# -- after content: an error event and [DONE], never a silent end ----------------------------------


@pytest.mark.parametrize("fault", ["drop", "stall", "upstream error event"])
def test_failure_after_content_ends_with_error_event_and_done(gunicorn_server, fake_openai, fault):
    cfg = config(
        model(fake_openai.chat_url, "fake/concrete"),
        http={"connect_timeout": 1, "read_timeout": 5, "stream_idle_timeout": 1},
    )
    server = gunicorn_server(cfg, env=FAST_ENV)
    if fault == "drop":
        fake_openai.push_chat(content=WORDS, drop_after=3)
    elif fault == "stall":
        fake_openai.push_chat(content=WORDS, stall_after=3, stall_for=30)
    else:
        fake_openai.push_chat(content=WORDS, error_after=2)
    started = time.monotonic()
    result = stream(server.port, chat_body("fake/concrete"))
    elapsed = time.monotonic() - started
    assert result.status == 200
    assert result.content == "One two"
    assert len(result.errors) == 1
    assert result.errors[0]["message"] and result.errors[0]["type"]
    assert result.datas[-2:] == [{"error": result.errors[0]}, "[DONE]"]
    assert result.complete
    assert elapsed < 4.0  # a stall is cut after stream_idle_timeout (1 s), never a hang
    assert len(fake_openai.chat_requests) == 1  # content was sent: no retry behind the client's back


def test_openai_sdk_sees_the_mid_stream_failure(gunicorn_server, fake_openai):
    import openai

    from tests.harness import openai_client

    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/concrete")), env=FAST_ENV)
    fake_openai.push_chat(content=WORDS, drop_after=3)
    client = openai_client(server, api_key=FAST_ENV["AI_PROXY_API_KEYS"])
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
            model="fake/concrete", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "One" in received


# -- heartbeats -------------------------------------------------------------------------------------


def test_heartbeats_while_the_upstream_thinks(gunicorn_server, fake_openai):
    """Headers came, first token late: a comment line every heartbeat_seconds (0.5 s) meanwhile."""
    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/concrete")), env=FAST_ENV)
    fake_openai.push_chat(content=WORDS, stall_after=1, stall_for=2.0)
    result = stream(server.port, chat_body("fake/concrete"))
    assert_complete(result)
    first = result.first_content_at()
    early = [e for e in result.comments if e.at < first]
    assert len(early) >= 3, [e.raw for e in result.events]
    assert all(e.raw == b": keep-alive" for e in early)


def test_heartbeats_while_the_upstream_has_not_answered_yet(gunicorn_server, fake_openai):
    """The upstream sends even its headers late (queued, cold start): the client still gets its
    first bytes within heartbeat_seconds, not when the upstream finally answers."""
    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/concrete")), env=FAST_ENV)
    fake_openai.push_chat(content=WORDS, delay=2.5)
    result = stream(server.port, chat_body("fake/concrete"))
    assert_complete(result)
    assert result.events[0].raw == b": keep-alive"
    assert result.events[0].at - result.started < 1.5
    assert len([e for e in result.comments if e.at < result.first_content_at()]) >= 3


def test_slow_open_that_fails_becomes_an_error_event(gunicorn_server, fake_openai):
    """Once heartbeats went out the status is 200: a later failure before content is an error event."""
    cfg = config(model(fake_openai.chat_url, "fake/concrete"), retry={"max_attempts": 1})
    server = gunicorn_server(cfg, env=FAST_ENV)
    fake_openai.push_error("server_error")
    fake_openai.routes["chat"].script[0].delay = 1.5
    result = stream(server.port, chat_body("fake/concrete"))
    assert result.status == 200
    assert result.comments
    assert result.errors and result.errors[0]["type"] == "upstream_error"
    assert result.datas[-1] == "[DONE]"


def test_fast_failures_keep_their_http_status(gunicorn_server, fake_openai):
    cfg = config(model(fake_openai.chat_url, "fake/concrete"), retry={"max_attempts": 1})
    server = gunicorn_server(cfg, env=FAST_ENV)
    fake_openai.push_error("invalid_request")
    assert stream(server.port, chat_body("fake/concrete")).status == 400
    assert stream(server.port, chat_body("no/such-model")).status == 404


# -- clients that hang up ---------------------------------------------------------------------------


def _abort_after_first_content(port: int, body: dict) -> None:
    conn, response = open_stream(port, body)
    assert response.status == 200
    for event in read_events(response, time.monotonic()):
        data = event.data
        if isinstance(data, dict) and data.get("choices") and data["choices"][0]["delta"].get("content"):
            break
    # Hang up hard, as a browser tab that is closed (RST rather than a polite FIN).
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


def test_aborted_streams_leak_nothing(gunicorn_server, fake_openai, record_property):
    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/concrete")), env=FAST_ENV, threads=8)
    worker = server.pids()[1]
    long_answer = [f" w{i}" for i in range(400)]
    fake_openai.set_default("chat", fake_openai.reply(content=long_answer, chunk_delay=0.02))

    # Warm up: pools, lazily started threads, allocator arenas.
    for _ in range(10):
        _abort_after_first_content(server.port, chat_body("fake/concrete"))
    assert wait_until(lambda: all(r.client_gone for r in fake_openai.chat_requests), 10)
    time.sleep(0.5)
    before = proc_usage(worker)

    started = len(fake_openai.chat_requests)
    t0 = time.monotonic()
    for _ in range(100):
        _abort_after_first_content(server.port, chat_body("fake/concrete"))
    aborted = fake_openai.chat_requests[started:]
    assert len(aborted) == 100
    # The fake notices the proxy hung up when its next write fails (every 20 ms while streaming).
    assert wait_until(lambda: all(r.client_gone for r in fake_openai.chat_requests[started:]), 10)
    # Nowhere near the 8 s a 400-word answer takes: every upstream was closed at once.
    longest = max(r.sent_at[-1] - r.headers_sent_at for r in fake_openai.chat_requests[started:])
    assert longest < 2.0, longest
    assert wait_until(lambda: proc_usage(worker).threads <= before.threads, 5)
    time.sleep(0.5)
    after = proc_usage(worker)
    elapsed = time.monotonic() - t0
    record_property("aborted_streams", {"before": before, "after": after, "seconds": round(elapsed, 2)})
    print(f"100 aborted streams in {elapsed:.1f}s: before {before}, after {after}")
    assert after.threads <= before.threads, (before, after)
    assert after.fds <= before.fds, (before, after)
    assert after.sockets <= before.sockets, (before, after)
    assert after.rss_kb - before.rss_kb < 4096, (before, after)  # < 4 MB: no per-stream leak
    # And the server still answers.
    fake_openai.set_default("chat", fake_openai.reply(content=WORDS))
    assert_complete(stream(server.port, chat_body("fake/concrete")))
    assert get(server.port, "/health")[0] == 200
