"""Sequential clients: one keep-alive `http.client` connection per target, the same code for the direct
call and the call through the proxy, so the difference of the two is the proxy's."""

from __future__ import annotations

import gc
import http.client
import time
from dataclasses import dataclass, field


class Target:
    """POST `body` to `path` on 127.0.0.1:`port` over one kept-alive connection."""

    def __init__(self, port: int, path: str, body: bytes, key: str = "", timeout: float = 30.0) -> None:
        self.port = port
        self.path = path
        self.body = body
        self.headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def once(self) -> float:
        """Seconds for one request, from sending it to its last byte; raises on a non-200."""
        conn = self.conn
        started = time.perf_counter()
        conn.request("POST", self.path, self.body, self.headers)
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{self.port}{self.path}: HTTP {response.status}: {data[:300]!r}")
        return elapsed

    def stream_once(self) -> Stream:
        """One streamed request: when its first body bytes and each SSE event arrived."""
        conn = self.conn
        started = time.perf_counter()
        conn.request("POST", self.path, self.body, self.headers)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{self.port}{self.path}: HTTP {response.status}: {response.read()[:300]!r}")
        result = Stream()
        pending = b""
        while True:
            data = response.read1(65536)
            if not data:
                break
            now = time.perf_counter() - started
            if result.first_byte is None:
                result.first_byte = now
            pending += data
            events = pending.count(b"\n\n")
            if events:
                pending = pending[pending.rfind(b"\n\n") + 2 :]
                result.reads_with_events += 1
                head = data.lstrip()
                if result.first_content is None and b'"content"' in data and not head.startswith(b":"):
                    result.first_content = now
                result.arrivals.extend([now] * events)
        result.total = time.perf_counter() - started
        return result

    def close(self) -> None:
        self.conn.close()


@dataclass
class Stream:
    first_byte: float | None = None
    first_content: float | None = None
    total: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    reads_with_events: int = 0


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of `values` (not necessarily sorted)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def interleaved(targets: dict[str, Target], total: int, block: int = 100, warmup: int = 200):
    """`total` timed requests per target after `warmup` each, in alternating blocks of `block`, so that
    noise from the shared machine falls on every target alike. Returns {name: [seconds, ...]}."""
    for target in targets.values():
        for _ in range(warmup):
            target.once()
    times: dict[str, list[float]] = {name: [] for name in targets}
    gc.collect()
    gc.disable()
    try:
        done = 0
        while done < total:
            n = min(block, total - done)
            for name, target in targets.items():
                once = target.once
                times[name].extend(once() for _ in range(n))
            done += n
    finally:
        gc.enable()
    return times
