"""Server-sent events: a pure parser for upstream streams and the encoder for our own."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import orjson


class SSEEvent(NamedTuple):
    event: str  # "" when the stream gave no `event:` line
    data: bytes


class LineTooLong(ValueError):
    """One line of the stream is longer than the parser's limit."""


def iter_sse(chunks: Iterable[bytes], max_line: int = 1024 * 1024) -> Iterator[SSEEvent]:
    """Split raw stream bytes into events (LF or CRLF endings; comments skipped; data lines joined).

    Linear in the input: an unterminated line is kept as a list of pieces, joined once when its end
    arrives. A line longer than `max_line` bytes raises LineTooLong as soon as it is seen."""
    pending: list[bytes] = []  # the pieces of the line not yet ended
    pending_size = 0
    event = ""
    data: list[bytes] = []
    for chunk in chunks:
        if b"\n" not in chunk:
            if chunk:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size > max_line:
                    raise LineTooLong(max_line)
            continue
        lines = chunk.split(b"\n")
        if pending:
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending.clear()
        tail = lines.pop()
        pending_size = len(tail)
        if tail:
            pending.append(tail)
        for line in lines:
            if len(line) > max_line:
                raise LineTooLong(max_line)
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
        if pending_size > max_line:
            raise LineTooLong(max_line)
    tail = b"".join(pending).rstrip(b"\r")
    if tail.startswith(b"data:"):
        value = tail[5:]
        data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield SSEEvent(event, b"\n".join(data))


DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"  # an SSE comment: the heartbeat of the OpenAI-shaped streams


def encode(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def encode_event(name: str, payload: dict[str, Any]) -> bytes:
    """One SSE event with an `event:` line, as Anthropic's and the Responses API's streams have."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
