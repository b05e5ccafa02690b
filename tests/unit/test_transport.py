"""The transport's fast path (app.http.send): the session's own urllib3 pool without Session.request,
one write per small request, streams that give their connection back, and the same error mapping."""

from __future__ import annotations

import http.client
import io
import socket
import threading

import pytest
import requests

from app.config import HttpConfig, ModelConfig
from app.errors import UpstreamError, UpstreamTimeout
from app.http import SessionPool, UpstreamResponse, _parse_headers, send
from app.providers.openai import OpenAICompatible
from tests.fakes.server import Behavior, FakeServer, sse

HTTP = HttpConfig(connect_timeout=1, read_timeout=2, stream_idle_timeout=2)


@pytest.fixture
def fake():
    server = FakeServer()
    server.add_route("chat", "POST", "/", Behavior(json={"ok": True}, headers={"X-RateLimit-Remaining": "7"}))
    with server:
        yield server


def post(session: requests.Session, url: str, stream: bool = False, **kwargs):
    return send(
        session,
        url,
        data=b'{"model":"m"}',
        headers={"Content-Type": "application/json", "Authorization": "Bearer k"},
        timeout=(1, 2),
        stream=stream,
        model_name="test/model",
        **kwargs,
    )


def test_plain_post_skips_session_request_and_reuses_the_connection(fake, monkeypatch) -> None:
    session = SessionPool(HTTP).get("openai")
    monkeypatch.setattr(session, "request", lambda *a, **k: pytest.fail("went through Session.request"))
    first = post(session, fake.url + "/v1/chat?x=1")
    assert post(session, fake.url + "/v1/chat?x=1").status_code == 200
    assert isinstance(first, UpstreamResponse)
    assert first.status_code == 200 and first.content == b'{"ok": true}'
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
    session = SessionPool(HTTP).get("openai")
    port = listener.getsockname()[1]
    assert post(session, f"http://127.0.0.1:{port}/v1").content == b"{}"
    thread.join(5)
    listener.close()
    assert first_reads[0].endswith(b'\r\n\r\n{"model":"m"}')  # headers and body in one segment


def test_a_configured_proxy_goes_through_the_session(fake) -> None:
    session = SessionPool(HttpConfig(proxy=fake.url, connect_timeout=1, read_timeout=2)).get("openai")
    answer = post(session, "http://upstream.invalid/v1/chat")
    assert isinstance(answer, requests.Response) and answer.status_code == 200
    assert fake.requests[0].path.endswith("/v1/chat")  # the proxy got the absolute URL


def test_a_redirect_is_followed_by_requests_from_then_on(fake) -> None:
    fake.add_route("moved", "POST", "/old", Behavior(status=307, headers={"Location": "/new"}, body=b""))
    fake.routes["chat"] = fake.routes.pop("chat")  # tried after "/old", which it would match too
    session = SessionPool(HTTP).get("openai")
    for _ in range(2):
        answer = post(session, fake.url + "/old")
        assert answer.status_code == 200 and answer.content == b'{"ok": true}'
    # the first answer's redirect is handed to requests, which asks again and follows it
    assert [r.path for r in fake.requests] == ["/old", "/old", "/new", "/old", "/new"]


def test_errors_are_mapped_without_the_url(fake) -> None:
    session = SessionPool(HTTP).get("openai")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(UpstreamError, match="Could not connect") as refused:
        post(session, f"http://127.0.0.1:{closed}/v1/chat")
    assert "127.0.0.1" not in refused.value.message
    fake.push("chat", Behavior(json={}, delay=2.5))
    with pytest.raises(UpstreamTimeout, match="timed out"):
        post(session, fake.url + "/v1/chat")


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


@pytest.mark.parametrize(
    "block",
    [
        b"Content-Type: application/json\r\nContent-Length: 12\r\n\r\n",
        b"Set-Cookie: a=1\r\nset-cookie: b=2\r\nX-Spaced:   v  \r\nX-Empty:\r\nX-Colon: a:b\r\n\r\n",
        b"X-Folded: one\r\n two\r\nContent-Length: 3\r\n\r\n",  # obs-fold: the email parser's job
        b"Not a header line\r\nContent-Length: 3\r\n\r\n",
        b"Bare-LF: yes\nContent-Length: 3\n\n",
        b"",
    ],
)
def test_fast_header_parsing_matches_http_client(block: bytes) -> None:
    expected = http.client.parse_headers(io.BytesIO(block))
    got = _parse_headers(io.BytesIO(block))
    assert type(got) is type(expected)
    assert got.items() == expected.items()
    assert got.get("content-length") == expected.get("content-length")
    assert got.get_all("set-cookie") == expected.get_all("set-cookie")
