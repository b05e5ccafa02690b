"""What a client that hangs up leaves behind in a real gunicorn worker (threads, file descriptors,
sockets, memory, read from /proc). The streaming logic (retries, error events, heartbeats, stalls) is
tested in process: tests/api/test_streaming.py."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import pytest

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

    # Warm up: pools, lazily started threads, allocator arenas. The warm-up aborts 8 streams at a time
    # (as many as the worker has threads), so the thread pools grow to what 8 concurrent streams need;
    # the 100 aborts measured below come one by one and, however slow a loaded machine makes them,
    # never overlap more than that: a thread more afterwards is a leak, not a pool that grew.
    body = chat_body("fake/concrete")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: _abort_after_first_content(server.port, body), range(24)))
    assert wait_until(lambda: all(r.client_gone for r in fake_openai.chat_requests), 20)
    time.sleep(0.5)
    before = proc_usage(worker)

    started = len(fake_openai.chat_requests)
    t0 = time.monotonic()
    for _ in range(100):
        _abort_after_first_content(server.port, chat_body("fake/concrete"))
    aborted = fake_openai.chat_requests[started:]
    assert len(aborted) == 100
    # The fake notices the proxy hung up when its next write fails (every 20 ms while streaming).
    assert wait_until(lambda: all(r.client_gone for r in fake_openai.chat_requests[started:]), 20)
    # Nowhere near the 8 s a 400-word answer takes (the reference): every upstream was closed at once.
    longest = max(r.sent_at[-1] - r.headers_sent_at for r in fake_openai.chat_requests[started:])
    assert longest < len(long_answer) * 0.02 / 2, longest
    assert wait_until(lambda: proc_usage(worker).threads <= before.threads, 15)
    time.sleep(0.5)
    after = proc_usage(worker)
    elapsed = time.monotonic() - t0
    record_property(
        "aborted_streams", {"before": asdict(before), "after": asdict(after), "seconds": round(elapsed, 2)}
    )
    print(f"100 aborted streams in {elapsed:.1f}s: before {before}, after {after}")
    assert after.threads <= before.threads, (before, after)
    assert after.fds <= before.fds, (before, after)
    assert after.sockets <= before.sockets, (before, after)
    assert after.rss_kb - before.rss_kb < 4096, (before, after)  # < 4 MB: no per-stream leak
    # And the server still answers.
    fake_openai.set_default("chat", fake_openai.reply(content=WORDS))
    result = stream(server.port, chat_body("fake/concrete"))
    assert result.status == 200 and result.errors == [] and result.content == "".join(WORDS)
    assert result.datas[-1] == "[DONE]" and result.complete
    assert get(server.port, "/health")[0] == 200
