"""A client for the proxy's streaming answers that times every SSE block: over a socket (`stream`,
`open_stream`, `get`) or in process through Flask's test client (`app_stream`)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.builders import CLIENT_KEY


@dataclass
class Event:
    at: float  # time.monotonic() when the bytes arrived
    raw: bytes  # one SSE block without its trailing blank line

    @property
    def data(self) -> Any:
        """The JSON of a `data:` event, the string "[DONE]", or None for a comment."""
        if not self.raw.startswith(b"data: "):
            return None
        text = self.raw[6:]
        return "[DONE]" if text == b"[DONE]" else json.loads(text)

    @property
    def comment(self) -> bool:
        return self.raw.startswith(b":")


@dataclass
class StreamResult:
    status: int
    headers: dict[str, str]
    started: float
    events: list[Event] = field(default_factory=list)
    complete: bool = False  # the HTTP body ended properly (final chunk)

    @property
    def datas(self) -> list[Any]:
        return [e.data for e in self.events if not e.comment]

    @property
    def content(self) -> str:
        out = []
        for data in self.datas:
            if isinstance(data, dict):
                for choice in data.get("choices") or ():
                    out.append((choice.get("delta") or {}).get("content") or "")
        return "".join(out)

    @property
    def comments(self) -> list[Event]:
        return [e for e in self.events if e.comment]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [d["error"] for d in self.datas if isinstance(d, dict) and "error" in d]

    def first_content_at(self) -> float:
        for event in self.events:
            data = event.data
            if isinstance(data, dict) and any(
                (c.get("delta") or {}).get("content") for c in data.get("choices") or ()
            ):
                return event.at
        raise AssertionError("no content event")


def chat_body(model_name: str, text: str = "Say hello", **extra: Any) -> dict[str, Any]:
    return {"model": model_name, "messages": [{"role": "user", "content": text}], "stream": True, **extra}


def open_stream(port: int, body: dict[str, Any], key: str = CLIENT_KEY, timeout: float = 20.0):
    """POST a streaming chat request over a fresh connection; returns (conn, response) once headers came."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=headers)
    return conn, conn.getresponse()


def read_events(response: http.client.HTTPResponse, started: float) -> Iterator[Event]:
    """SSE blocks as they arrive (read1: no waiting to fill a buffer)."""
    return split_events(iter(lambda: response.read1(65536), b""))


def split_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """SSE blocks out of body pieces, each timed when the piece that completed it arrived."""
    buffer = b""
    for chunk in chunks:
        now = time.monotonic()
        buffer += chunk
        *blocks, buffer = buffer.split(b"\n\n")
        for block in blocks:
            if block:
                yield Event(now, block)


def stream(port: int, body: dict[str, Any], key: str = CLIENT_KEY, timeout: float = 20.0) -> StreamResult:
    """A whole streaming request, every SSE block timed."""
    started = time.monotonic()
    conn, response = open_stream(port, body, key, timeout)
    result = StreamResult(response.status, dict(response.getheaders()), started)
    try:
        if response.status != 200:
            result.events.append(Event(time.monotonic(), b"data: " + response.read()))
            result.complete = True
            return result
        try:
            result.events.extend(read_events(response, started))
            result.complete = True
        except (http.client.IncompleteRead, ConnectionError):
            result.complete = False
    finally:
        conn.close()
    return result


def get(port: int, path: str, key: str | None = CLIENT_KEY, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def app_stream(proxy: Any, body: dict[str, Any], key: str = CLIENT_KEY) -> StreamResult:
    """`stream` for an `InProcessProxy`: the app's body pieces are read as the app yields them."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = proxy.client.post("/v1/chat/completions", json=body, headers=headers, buffered=False)
    result = StreamResult(response.status_code, dict(response.headers), started)
    try:
        if response.status_code != 200:
            result.events.append(Event(time.monotonic(), b"data: " + response.get_data()))
        else:
            result.events.extend(split_events(response.response))
        result.complete = True
    finally:
        response.close()
    return result
