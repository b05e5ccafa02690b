"""Graceful shutdown under a real gunicorn: SIGTERM stops accepting, lets in-flight answers and streams
finish within graceful_timeout, and never ends a stream so that a cut looks like a complete answer."""

from __future__ import annotations

import http.client
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.ops.conftest import FAST_ENV, chat_body, config, connect_refused, get, model, stream, wait_until

pytestmark = pytest.mark.e2e

PIECES = [f" p{i}" for i in range(10)]


def _late_request(port: int) -> int | str:
    """The status of a request sent during shutdown, or the name of the error that ended it."""
    try:
        return get(port, "/health", timeout=15)[0]
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__


def test_sigterm_lets_in_flight_streams_and_answers_finish(gunicorn_server, fake_openai, record_property):
    env = {**FAST_ENV, "AI_PROXY_GRACEFUL_TIMEOUT": "30"}
    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/concrete")), env=env)
    # Each stream takes ~3 s (10 pieces, 0.3 s apart); one plain answer takes 2 s to come.
    fake_openai.set_default("chat", fake_openai.reply(content=PIECES, chunk_delay=0.3))
    with ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(stream, server.port, chat_body("fake/concrete"), timeout=30) for _ in range(3)]
        assert wait_until(lambda: len(fake_openai.chat_requests) == 3, 15)
        fake_openai.push_chat(delay=2.0)
        plain = pool.submit(stream, server.port, {**chat_body("fake/concrete"), "stream": False}, timeout=30)
        assert wait_until(lambda: len(fake_openai.chat_requests) == 4, 15)
        assert wait_until(lambda: all(len(r.sent_at) >= 2 for r in fake_openai.chat_requests[:3]), 15)

        sigterm = time.monotonic()
        stopper = threading.Thread(target=server.stop, kwargs={"sig": signal.SIGTERM, "timeout": 40})
        stopper.start()
        # No new request is answered any more: the listening socket is closed (a condition waited
        # for, not a guessed delay) while the streams still run.
        assert wait_until(lambda: connect_refused(server.port), 15)
        late = pool.submit(_late_request, server.port)
        results = [f.result(timeout=20) for f in streams]
        plain_result = plain.result(timeout=20)
        stopper.join(45)
        exited_after = time.monotonic() - sigterm
        late_outcome = late.result(timeout=20)

    for result in results:
        assert result.status == 200
        assert result.errors == []
        assert result.content == "".join(PIECES)
        assert result.datas[-1] == "[DONE]" and result.complete
    assert plain_result.status == 200
    last_stream_end = max(r.events[-1].at for r in results) - sigterm
    assert not isinstance(late_outcome, int), f"a request sent after SIGTERM got HTTP {late_outcome}"
    timings = {
        "last_stream_done_after_s": round(last_stream_end, 2),
        "master_exited_after_s": round(exited_after, 2),
    }
    record_property("shutdown", timings)
    print("graceful shutdown:", timings)
    assert last_stream_end > 1.5  # the streams really were still running after SIGTERM
    # Once nothing is left the master goes, far sooner than graceful_timeout (30 s).
    assert exited_after < 20


def test_stream_longer_than_graceful_timeout_is_cut_visibly(gunicorn_server, fake_openai, record_property):
    """Past graceful_timeout the worker is gone: the client sees a broken stream without [DONE],
    never a stream that ends as if it were complete."""
    env = {**FAST_ENV, "AI_PROXY_GRACEFUL_TIMEOUT": "2"}
    server = gunicorn_server(config(model(fake_openai.chat_url, "fake/concrete")), env=env)
    fake_openai.push_chat(content=[f" w{i}" for i in range(120)], chunk_delay=0.25)  # ~30 s
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(stream, server.port, chat_body("fake/concrete"), timeout=30)
        assert wait_until(
            lambda: fake_openai.chat_requests and len(fake_openai.chat_requests[0].sent_at) >= 2, 5
        )
        sigterm = time.monotonic()
        server.stop(sig=signal.SIGTERM, timeout=15)
        exited_after = time.monotonic() - sigterm
        result = running.result(timeout=15)
    record_property("cut_after_graceful_timeout_s", round(exited_after, 2))
    # Cut after graceful_timeout (2 s), long before the stream's own end (~30 s).
    assert 1.8 < exited_after < 15, exited_after
    assert result.content  # it was streaming
    assert "[DONE]" not in result.datas
    assert not result.complete
