"""A fake OpenAI upstream for what nginx cannot do: answers after a delay and SSE streams whose
chunks are spaced in time. One asyncio process, raw protocol, keep-alive.

    python -m bench.fake --port 9101

Behaviour per request, from the query string of the URL the proxy is configured with:
`latency_ms` (before the answer, or before a stream's first chunk), `chunks` (content chunks of a
stream, default 100) and `delay_ms` (between chunks, default 0); `--query` gives defaults for a
client that builds the URL itself (LiteLLM). A body with `"stream": true` gets an
SSE stream (chunked transfer encoding, one HTTP chunk per event), anything else the JSON answer.
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import parse_qs, urlsplit

import orjson

from bench.payloads import COMPLETION_BYTES, sse_events

JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
    COMPLETION_BYTES
)
JSON_ANSWER = JSON_HEAD + COMPLETION_BYTES
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_events: dict[int, list[bytes]] = {}
_running: set[asyncio.Task[None]] = set()
_defaults: dict[str, str] = {}


def _framed(chunks: int) -> list[bytes]:
    """The SSE events of a `chunks`-long stream, each framed as one HTTP/1.1 chunk (cached)."""
    framed = _events.get(chunks)
    if framed is None:
        framed = _events[chunks] = [b"%x\r\n%s\r\n" % (len(e), e) for e in sse_events(chunks)]
    return framed


class Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.busy = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        while not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].split(b"\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            target = lines[0].split(b" ")[1].decode()
            query = {**_defaults, **{k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}}
            stream = b'"stream"' in body and bool(orjson.loads(body).get("stream"))
            latency = float(query.get("latency_ms", 0)) / 1000.0
            if not stream and not latency:
                self.transport.write(JSON_ANSWER)
                continue
            self.busy = True
            task = asyncio.ensure_future(self._answer(stream, latency, query))
            _running.add(task)
            task.add_done_callback(_running.discard)

    async def _answer(self, stream: bool, latency: float, query: dict[str, str]) -> None:
        try:
            if not stream:
                await asyncio.sleep(latency)
                self.transport.write(JSON_ANSWER)
                return
            delay = float(query.get("delay_ms", 0)) / 1000.0
            events = _framed(int(query.get("chunks", 100)))
            self.transport.write(SSE_HEAD)
            if latency:
                await asyncio.sleep(latency)
            last = len(events) - 1
            for index, event in enumerate(events):
                self.transport.write(event)
                if delay and index < last:
                    await asyncio.sleep(delay)
            self.transport.write(b"0\r\n\r\n")
        finally:
            self.busy = False
        if not self.transport.is_closing():
            self._next()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--query", default="", help="defaults for every request, e.g. chunks=30&delay_ms=1000"
    )
    args = parser.parse_args()
    _defaults.update((k, v[0]) for k, v in parse_qs(args.query).items())

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, args.host, args.port, backlog=1024, reuse_address=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
