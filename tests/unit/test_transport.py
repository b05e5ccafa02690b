"""The transport's fast path (Transport.post): the session's own urllib3 pool without
Session.request, one write per small request, streams that give their connection back, public
extension points only, and the one error mapping."""

from __future__ import annotations

import socket
import threading
import time
import types

import pytest

from app.config import HttpConfig, ModelConfig
from app.errors import UpstreamError, UpstreamTimeout
from app.http import ProxyAdapter, SessionPool, UpstreamResponse, Watchdog
from app.providers.openai import OpenAICompatible
from tests.fakes.server import Behavior, FakeServer, sse

HTTP = HttpConfig(connect_timeout=1, read_timeout=2, stream_idle_timeout=2)


@pytest.fixture
def fake():
    server = FakeServer()
    server.add_route("chat", "POST", "/", Behavior(json={"ok": True}, headers={"X-RateLimit-Remaining": "7"}))
    with server:
        yield server


def post(pool: SessionPool, url: str, stream: bool = False) -> UpstreamResponse:
    return pool.transport("openai").post(
        url,
        data=b'{"model":"m"}',
        headers={"Content-Type": "application/json", "Authorization": "Bearer k"},
        stream=stream,
        model_name="test/model",
    )


def test_plain_post_skips_session_request_and_reuses_the_connection(fake, monkeypatch) -> None:
    pool = SessionPool(HTTP)
    session = pool.get("openai")
    monkeypatch.setattr(session, "request", lambda *a, **k: pytest.fail("went through Session.request"))
    first = post(pool, fake.url + "/v1/chat?x=1")
    assert first.status_code == 200 and first.read() == b'{"ok": true}'
    assert post(pool, fake.url + "/v1/chat?x=1").read() == b'{"ok": true}'
    assert first.headers["x-ratelimit-remaining"] == "7"  # case-insensitive, like requests
    one, two = fake.requests
    assert one.path == "/v1/chat" and one.query == {"x": "1"} and one.body == b'{"model":"m"}'
    assert one.headers["User-Agent"] == "ai-proxy" and one.headers["Authorization"] == "Bearer k"
    assert one.headers["Accept-Encoding"] == "gzip, deflate"
    assert one.client_port == two.client_port  # kept alive


def test_header_block_and_small_body_leave_in_one_write() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    first_reads: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            first_reads.append(conn.recv(65536))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    assert post(SessionPool(HTTP), f"http://127.0.0.1:{port}/v1").read() == b"{}"
    thread.join(5)
    listener.close()
    assert first_reads[0].endswith(b'\r\n\r\n{"model":"m"}')  # headers and body in one segment


def test_a_configured_proxy_goes_through_the_session(fake) -> None:
    pool = SessionPool(HttpConfig(proxy=fake.url, connect_timeout=1, read_timeout=2))
    answer = post(pool, "http://upstream.invalid/v1/chat")
    assert answer.status_code == 200 and answer.read() == b'{"ok": true}'
    assert fake.requests[0].path.endswith("/v1/chat")  # the proxy got the absolute URL


def test_a_redirect_is_followed_by_requests_from_then_on(fake) -> None:
    fake.add_route("moved", "POST", "/old", Behavior(status=307, headers={"Location": "/new"}, body=b""))
    fake.routes["chat"] = fake.routes.pop("chat")  # tried after "/old", which it would match too
    pool = SessionPool(HTTP)
    for _ in range(2):
        answer = post(pool, fake.url + "/old")
        assert answer.status_code == 200 and answer.read() == b'{"ok": true}'
    # the first answer's redirect is handed to requests, which asks again and follows it
    assert [r.path for r in fake.requests] == ["/old", "/old", "/new", "/old", "/new"]


def test_errors_are_mapped_without_the_url(fake) -> None:
    pool = SessionPool(HTTP)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(UpstreamError, match="Could not connect") as refused:
        post(pool, f"http://127.0.0.1:{closed}/v1/chat")
    assert "127.0.0.1" not in refused.value.message
    fake.push("chat", Behavior(json={}, delay=2.5))
    with pytest.raises(UpstreamTimeout, match="timed out") as slow:
        post(pool, fake.url + "/v1/chat")
    assert "127.0.0.1" not in slow.value.message


def test_a_finished_stream_gives_its_connection_back(fake) -> None:
    done = [
        sse({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}),
        b"data: [DONE]\n\n",
    ]
    fake.set_default("chat", Behavior(events=done))
    model = ModelConfig(
        name="m", provider="openai", url=fake.url + "/v1/chat/completions", upstream_model="m"
    )
    provider = OpenAICompatible(model, SessionPool(HTTP), HTTP)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    for _ in range(3):
        stream = provider.stream(body)
        assert [c["choices"][0]["delta"]["content"] for c in stream] == ["hi"]
        stream.close()
    assert len({r.client_port for r in fake.requests}) == 1


def test_pools_and_connections_are_ours_through_public_extension_points(fake) -> None:
    pool = SessionPool(HTTP)
    assert post(pool, fake.url + "/v1/chat").read() == b'{"ok": true}'
    adapter = pool.get("openai").get_adapter(fake.url)
    assert isinstance(adapter, ProxyAdapter)
    (connection_pool,) = [adapter.poolmanager.connection_from_url(fake.url)]
    assert connection_pool.ConnectionCls.watchdog is pool.watchdog
    # a second SessionPool has its own watchdog and classes: nothing is shared between them
    other = SessionPool(HTTP).get("openai").get_adapter(fake.url)
    assert other.poolmanager.connection_from_url(fake.url).ConnectionCls is not connection_pool.ConnectionCls


def wait_for(predicate, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "the watchdog did not act"
        time.sleep(0.02)


def test_the_watchdog_shuts_only_the_connection_of_an_expired_call() -> None:
    watchdog = Watchdog()
    ours, theirs = socket.socketpair()
    connection = types.SimpleNamespace(answer_socket=ours)
    try:
        now = time.monotonic()
        old = watchdog.arm(now + 0.05, now + 0.05)
        watchdog.attach(connection)  # the old call's request
        watchdog.leave()
        newer = watchdog.arm(now + 60, now + 60)
        watchdog.attach(connection)  # the same connection, back from the pool, serves a new call
        watchdog.leave()
        wait_for(lambda: old.expired)
        theirs.sendall(b"x")
        assert ours.recv(1) == b"x"  # the new call's connection was left alone
        assert not newer.expired
        newer.when = time.monotonic()  # now the call that owns it runs out of time
        wait_for(lambda: newer.expired)
        assert ours.recv(1) == b""  # shut down: a blocked read would wake with end of file
    finally:
        watchdog.stop()
        ours.close()
        theirs.close()
