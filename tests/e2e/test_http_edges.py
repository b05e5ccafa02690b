"""What only the real server shows: gunicorn parses chunked bodies and raw request lines, so these
edges go over raw sockets to a real gunicorn (one server for all of them)."""

from __future__ import annotations

import json
import socket

from tests.fakes.openai import FakeOpenAI

CLIENT_KEY = "edges-client-key-31c9"
LIMIT = 4000


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer (the request says Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        body = out
    return int(lines[0].split()[1]), headers, body


def post(path: str, body_lines: bytes, *, chunked: bool) -> bytes:
    framing = (
        b"Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(body_lines)}\r\n".encode()
    )
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n".encode()
        + framing
        + b"\r\n"
        + body_lines
    )


def chunks(data: bytes, size: int = 1000) -> bytes:
    out = b"".join(
        b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in range(0, len(data), size)
    )
    return out + b"0\r\n\r\n"


def chat_body(padding: int = 0) -> bytes:
    return json.dumps(
        {"model": "fake/a", "messages": [{"role": "user", "content": "x" * padding or "hi"}]}
    ).encode()


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, body
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_chunked_bodies_and_doubled_slashes_through_gunicorn(
    gunicorn_server, fake_openai: FakeOpenAI
) -> None:
    model = {
        "name": "fake/a",
        "provider": "openai",
        "url": fake_openai.chat_url,
        "token": "sk-fake-upstream-key",
    }
    server = gunicorn_server(
        {"models": [model], "server": {"max_body_bytes": LIMIT}}, env={"AI_PROXY_API_KEYS": CLIENT_KEY}
    )

    status, _, body = exchange(server.port, post("/v1/chat/completions", chunks(chat_body()), chunked=True))
    assert status == 200 and json.loads(body)["model"] == "fake/a"

    status, _, body = exchange(server.port, post("/v1//chat/completions", chat_body(), chunked=False))
    assert status == 200 and json.loads(body)["model"] == "fake/a"

    over = chunks(chat_body(padding=LIMIT + 500))
    error = assert_json_error(*exchange(server.port, post("/v1/chat/completions", over, chunked=True)), 413)
    assert error["type"] == "invalid_request_error"

    bad = b"zz\r\n" + chat_body() + b"\r\n0\r\n\r\n"
    error = assert_json_error(*exchange(server.port, post("/v1/chat/completions", bad, chunked=True)), 400)
    assert error["type"] == "invalid_request_error"

    assert len(fake_openai.chat_requests) == 2
    assert "Traceback" not in server.log_text()


def test_gunicorns_own_errors_are_json_and_its_log_lines_redacted(
    gunicorn_server, fake_openai: FakeOpenAI
) -> None:
    """What gunicorn rejects before the app sees it (a malformed header line, its limits) is answered
    in OpenAI's shape by the worker (app/worker.py), never echoing the request; gunicorn's log line
    about it is redacted by the log filter on its logger."""
    model = {
        "name": "fake/a",
        "provider": "openai",
        "url": fake_openai.chat_url,
        "token": "sk-fake-upstream-key",
    }
    server = gunicorn_server({"models": [model]}, env={"AI_PROXY_API_KEYS": CLIENT_KEY})

    def get(path: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
        lines = "".join(f"{h}\r\n" for h in headers)
        return exchange(
            server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{lines}Connection: close\r\n\r\n".encode()
        )

    status, headers, body = get("/health", f"Authorization Bearer {CLIENT_KEY}")  # no colon
    error = assert_json_error(status, headers, body, 400)
    assert CLIENT_KEY.encode() not in body and error["type"] == "invalid_request_error"
    assert_json_error(*get("/health?" + "q" * 5000), 414)
    assert_json_error(*get("/health", *(f"X-Filler-{i}: 1" for i in range(120))), 431)
    assert_json_error(*get("/health", "X-Big: " + "b" * 9000), 431)
    assert get("/health")[0] == 200

    server.wait_for_log(r"Invalid request from ip=")
    log = server.log_text()
    assert CLIENT_KEY not in log and "[redacted]" in log
