"""A hostile upstream on raw sockets: one thread per connection, one bad behaviour per mode.

The mode is the first segment of the request path and the dialect of the data events it sends the
second, so one server serves every case: configure a model's url as
`{server.url}/<mode>/<openai|gemini|cohere|cloudflare>` (each adapter appends its own suffix).
A request is a stream when its JSON body says `"stream": true` or its path asks Gemini for SSE.

Modes: slow-headers, slow-body, comments, silence, huge, gzip-bomb, long-line, reset, endless
(see MODES). Every trickle stops when the client goes away or the server stops.
"""

from __future__ import annotations

import functools
import gzip
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Self

MB = 1024 * 1024
TICK = 1.0  # the trickle period: one byte, one comment, one event

DATA_EVENTS = {
    "openai": b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n',
    "gemini": b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"x"}]},"index":0}]}\n\n',
    "cohere": b'event: content-delta\ndata: {"type":"content-delta","index":0,'
    b'"delta":{"message":{"content":{"text":"x"}}}}\n\n',
    "cloudflare": b'data: {"response":"x"}\n\n',
}
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


@functools.cache
def gzip_bomb(inflated: int = 500 * MB) -> bytes:
    """`inflated` bytes of blanks as a gzip body of identical 1 MB members (about 1/1000 the size)."""
    return gzip.compress(b" " * MB, 9) * (inflated // MB)


class HostileServer:
    """`with HostileServer() as server:` ... `server.url`; `server.requests` counts requests by mode."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopped = threading.Event()
        self.requests: dict[str, int] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                path, body = read_request(conn)
                parts = path.split("/")
                mode, dialect = parts[1], parts[2] if len(parts) > 2 else "openai"
                stream = b'"stream":true' in body.replace(b" ", b"") or "alt=sse" in path
                with self._lock:
                    self.requests[mode] = self.requests.get(mode, 0) + 1
                MODES[mode](self, conn, DATA_EVENTS.get(dialect, DATA_EVENTS["openai"]), stream)
            except (OSError, KeyError, IndexError, ValueError):
                pass

    # --- the modes ----------------------------------------------------------------------------
    def trickle(self, conn: socket.socket, piece: bytes, period: float = TICK) -> None:
        """Send `piece` every `period` seconds until the client goes away or the server stops."""
        while not self._stopped.wait(period):
            conn.sendall(piece)

    def slow_headers(self, conn: socket.socket, event: bytes, stream: bool) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        self.trickle(conn, b"a")

    def slow_body(self, conn: socket.socket, event: bytes, stream: bool) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
        self.trickle(conn, b" ")

    def comments(self, conn: socket.socket, event: bytes, stream: bool) -> None:
        conn.sendall(SSE_HEAD + b": keep-alive\n\n")
        self.trickle(conn, b": keep-alive\n\n")

    def silence(self, conn: socket.socket, event: bytes, stream: bool) -> None:
        if stream:
            conn.sendall(SSE_HEAD + event * 3)
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        self._stopped.wait(60)

    def huge(self, conn: socket.socket, event: bytes, stream: bool) -> None:
        """100 MB, close-delimited (no Content-Length to refuse it by)."""
        if stream:
            conn.sendall(SSE_HEAD)
            padded = event.replace(b"data: {", b'data: {"pad":"' + b"a" * 65000 + b'",', 1)
            block = padded * (MB // len(padded))
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
            conn.sendall(b'{"choices":"')
            block = b"a" * MB
        for _ in range(100):
            conn.sendall(block)

    def gzip_bomb(self, conn: socket.socket, event: bytes, stream: bool) -> None:
        bomb = gzip_bomb()
        kind = b"text/event-stream" if stream else b"application/json"
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: " + str(len(bomb)).encode() + b"\r\n\r\n" + bomb
        )
        self._stopped.wait(5)

    def long_line(self, conn: socket.socket, event: bytes, stream: bool) -> None:
        """One unterminated 40 MB SSE line, in 64 KiB writes."""
        conn.sendall(SSE_HEAD + b"data: ")
        block = b"a" * 65536
        for _ in range(40 * MB // len(block)):
            conn.sendall(block)

    def reset(self, conn: socket.socket, event: bytes, stream: bool) -> None:
        head = SSE_HEAD + event if stream else b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"id":'
        conn.sendall(head)
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST

    def endless(self, conn: socket.socket, event: bytes, stream: bool) -> None:
        conn.sendall(SSE_HEAD + event)
        self.trickle(conn, event, TICK / 4)


MODES: dict[str, Callable[[HostileServer, socket.socket, bytes, bool], None]] = {
    "slow-headers": HostileServer.slow_headers,  # the header block at one byte a second
    "slow-body": HostileServer.slow_body,  # a 100000-byte body at one byte a second
    "comments": HostileServer.comments,  # an SSE comment every second, forever
    "silence": HostileServer.silence,  # three data events (or just headers), then nothing
    "huge": HostileServer.huge,  # a 100 MB answer or stream
    "gzip-bomb": HostileServer.gzip_bomb,  # 0.5 MB of gzip inflating to 500 MB
    "long-line": HostileServer.long_line,  # one unterminated 40 MB SSE line
    "reset": HostileServer.reset,  # a connection reset in the middle of the body
    "endless": HostileServer.endless,  # data events four times a second, forever
}


def read_request(conn: socket.socket) -> tuple[str, bytes]:
    """The path and body of one HTTP/1.1 request (Content-Length bodies only)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("no request")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return lines[0].split(" ")[1], body
