"""The capacity benchmark's load generator: many connections from one asyncio process over raw
sockets, so that a thousand open streams cost it little CPU on a 2-core machine.

    python -m bench.swarm < job.json > result.json

A job (JSON on stdin) is one of:
- `streams`: each stream opens at its `start` (seconds from the job's start) and records when its
  first byte and first content came, whether `[DONE]` came, its heartbeats, the largest gap between
  events before the content (heartbeats) and between data events after it;
- `requests`: plain POSTs, `concurrency` at a time, each on its own connection: status, error code,
  seconds;
- `trickle`: `count` connections that send their request headers (`part: headers`) or body (`part:
  body`) one byte a second; prints `ready` once each has sent its first byte, and runs until stopped.
Every request is `{"port", "path", "body", "key"}`.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from typing import Any

HEARTBEAT = b":"
DONE = b"data: [DONE]"


def request_bytes(spec: dict[str, Any]) -> tuple[bytes, bytes]:
    """(header block, body) of the POST `spec` describes."""
    body = spec["body"].encode()
    auth = f"Authorization: Bearer {spec['key']}\r\n" if spec.get("key") else ""
    head = (
        f"POST {spec['path']} HTTP/1.1\r\nHost: 127.0.0.1:{spec['port']}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode(), body


def event_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete SSE events in `buffer` (HTTP chunk framing and headers stripped) and the rest."""
    *events, rest = buffer.split(b"\n\n")
    return [event.rsplit(b"\r\n", 1)[-1] for event in events], rest


async def stream(spec: dict[str, Any], origin: float, timeout: float) -> dict[str, Any]:
    """One stream; times in seconds from the moment it started to connect."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, origin + spec.get("start", 0.0) - loop.time()))
    began = last = loop.time()
    out: dict[str, Any] = {"status": 0, "first_byte": None, "first_content": None, "done": False}
    out.update(heartbeats=0, gap_before_content=0.0, gap_content=0.0, error="")
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
            writer.write(b"".join(request_bytes(spec)))
            buffer = b""
            while not out["done"]:
                data = await reader.read(65536)
                if not data:
                    out["error"] = "closed before [DONE]"
                    break
                now = loop.time()
                if out["first_byte"] is None:
                    out["first_byte"] = now - began
                    out["status"] = int(data[9:12])
                    if out["status"] != 200:
                        out["error"] = f"HTTP {out['status']}"
                        break
                events, buffer = event_lines(buffer + data)
                for line in events:
                    if line == DONE:
                        out["done"] = True
                        continue
                    if out["first_content"] is None:
                        out["gap_before_content"] = max(out["gap_before_content"], now - last)
                        if not line.startswith(HEARTBEAT):
                            out["first_content"] = now - began
                    elif not line.startswith(HEARTBEAT):
                        out["gap_content"] = max(out["gap_content"], now - last)
                    out["heartbeats"] += line.startswith(HEARTBEAT)
                    last = now
    except TimeoutError:
        out["error"] = "timeout"
    except OSError as exc:
        out["error"] = type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    if out["first_content"] is None:  # waited to the end: that was the longest gap
        out["gap_before_content"] = max(out["gap_before_content"], loop.time() - last)
    return out


async def plain(spec: dict[str, Any], gate: asyncio.Semaphore, timeout: float) -> list[Any]:
    """[status, the error body's `code` or "", seconds] of one POST on a connection of its own."""
    async with gate:
        loop = asyncio.get_running_loop()
        began = loop.time()
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
                writer.write(b"".join(request_bytes(spec)))
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
            code = ""
            if not head.startswith(b"HTTP/1.1 200"):
                code = str(json.loads(body).get("error", {}).get("code") or "")
            return [int(head[9:12]), code, loop.time() - began]
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            return [0, type(exc).__name__, loop.time() - began]
        finally:
            if writer is not None:
                writer.close()


async def trickle(spec: dict[str, Any], part: str, started: list[int], count: int) -> None:
    """Send the headers (or, after whole headers, the body) one byte a second."""
    _, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
    head, body = request_bytes(spec)
    if part == "body":
        writer.write(head)
    slow = head if part == "headers" else body
    for index in range(len(slow)):
        writer.write(slow[index : index + 1])
        await writer.drain()
        if index == 0:
            started[0] += 1
            if started[0] == count:
                print("ready", flush=True)
        await asyncio.sleep(1.0)


async def run(job: dict[str, Any]) -> dict[str, Any]:
    timeout = job.get("timeout", 120.0)
    if job["kind"] == "streams":
        origin = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(stream(s, origin, timeout) for s in job["streams"]))
        return {"streams": results}
    if job["kind"] == "requests":
        gate = asyncio.Semaphore(job.get("concurrency", 500))
        results = await asyncio.gather(*(plain(s, gate, timeout) for s in job["requests"]))
        return {"requests": results}
    started = [0]
    count = job["count"]
    tricklers = (trickle(job["request"], job["part"], started, count) for _ in range(count))
    await asyncio.gather(*tricklers, return_exceptions=True)
    return {}


def main() -> None:
    job = json.load(sys.stdin)
    result = asyncio.run(run(job))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
