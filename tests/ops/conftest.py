"""Helpers for the operations tests: configs over fake upstreams, a raw SSE client, /proc readings."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CLIENT_KEY = "ops-client-key-7f3a9c"
UPSTREAM_KEY = "sk-fake-upstream-key"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Fast retries: the tests measure behaviour, not the production backoff.
FAST_ENV = {
    "AI_PROXY_API_KEYS": CLIENT_KEY,
    "AI_PROXY_RETRY_BASE_DELAY": "0.01",
    "AI_PROXY_RETRY_MAX_DELAY": "0.05",
}


def model(url: str, name: str, *, group: str = "SMALL", priority: int = 1, **extra: Any) -> dict[str, Any]:
    """One OpenAI-compatible model entry pointing at a fake's chat URL."""
    return {
        "name": name,
        "provider": "openai",
        "url": url,
        "token": UPSTREAM_KEY,
        "priority": priority,
        "requests_per_minute": 1000,
        "model_size": group,
        **extra,
    }


def config(*models: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A config with these models; `server` defaults to 0.5 s heartbeats, `http` to short timeouts."""
    sections.setdefault("server", {"heartbeat_seconds": 0.5})
    sections.setdefault("http", {"connect_timeout": 2, "read_timeout": 10, "stream_idle_timeout": 5})
    return {"models": list(models), **sections}


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
    buffer = b""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            return
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


def connect_refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


# -- /proc ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcUsage:
    threads: int
    fds: int
    rss_kb: int
    sockets: int


def proc_usage(pid: int) -> ProcUsage:
    fd_dir = Path(f"/proc/{pid}/fd")
    links = []
    for fd in fd_dir.iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return ProcUsage(
        threads=len(list(Path(f"/proc/{pid}/task").iterdir())),
        fds=len(links),
        rss_kb=rss,
        sockets=sum(1 for link in links if link.startswith("socket:")),
    )


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
