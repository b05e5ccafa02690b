"""Helpers for the operations tests: configs over fake upstreams, /proc readings, and (re-exported from
tests/streams.py) the timed SSE client."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import builders
from tests.builders import CLIENT_KEY, UPSTREAM_KEY  # noqa: F401  (re-exported)
from tests.streams import (  # noqa: F401  (the names the ops tests import from here)
    Event,
    StreamResult,
    app_stream,
    chat_body,
    get,
    open_stream,
    read_events,
    split_events,
    stream,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Fast retries: the tests measure behaviour, not the production backoff.
FAST_ENV = {
    "AI_PROXY_API_KEYS": CLIENT_KEY,
    "AI_PROXY_RETRY_BASE_DELAY": "0.01",
    "AI_PROXY_RETRY_MAX_DELAY": "0.05",
}


def model(url: str, name: str, *, group: str = "SMALL", priority: int = 1, **extra: Any) -> dict[str, Any]:
    """`builders.model` with a quota large enough never to be in the way (1000 requests a minute)."""
    extra.setdefault("requests_per_minute", 1000)
    return builders.model(url, name, group=group, priority=priority, **extra)


def config(*models: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A config with these models; `server` defaults to 0.5 s heartbeats, `http` to short timeouts."""
    sections.setdefault("server", {"heartbeat_seconds": 0.5})
    sections.setdefault("http", {"connect_timeout": 2, "read_timeout": 10, "stream_idle_timeout": 5})
    return builders.config(*models, **sections)


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


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` passes (its last value): a bound that only
    matters when the test fails, so it is generous for a loaded machine."""
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
