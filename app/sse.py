"""Server-sent events: a pure parser for upstream streams and the encoder for our own."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import orjson


class SSEEvent(NamedTuple):
    event: str  # "" when the stream gave no `event:` line
    data: bytes


def iter_sse(chunks: Iterable[bytes]) -> Iterator[SSEEvent]:
    """Split raw stream bytes into events (LF or CRLF endings; comments skipped; data lines joined)."""
    buffer = b""
    event = ""
    data: list[bytes] = []
    for chunk in chunks:
        if not chunk:
            continue
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield SSEEvent(event, b"\n".join(data))
                event, data = "", []
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value.decode("utf-8", "replace")
    tail = buffer.rstrip(b"\r")
    if tail.startswith(b"data:"):
        value = tail[5:]
        data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield SSEEvent(event, b"\n".join(data))


def read_chunks(raw: Any, size: int = 65536) -> Iterator[bytes]:
    """Yield bytes as they arrive from a urllib3 response (read1: no waiting to fill a buffer)."""
    read1 = raw.read1
    while True:
        chunk = read1(size)
        if not chunk:
            return
        yield chunk


DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"  # an SSE comment: the heartbeat of the OpenAI-shaped streams


def encode(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def encode_event(name: str, payload: dict[str, Any]) -> bytes:
    """One SSE event with an `event:` line, as Anthropic's and the Responses API's streams have."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
