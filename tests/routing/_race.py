"""A worker process for the multi-process race (importable by spawn, light on imports)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from app.config import BreakerConfig, ModelConfig, RoutingConfig
from app.errors import RateLimited
from app.routing import RedisStorage, Router


def race(url: str, namespace: str, model: ModelConfig, threads: int, ready: Any, results: Any) -> None:
    """Build a router like a gunicorn worker would, then fire `threads` acquires at once."""
    router = Router([model], RedisStorage.from_url(url, namespace), RoutingConfig(), BreakerConfig())
    start = threading.Barrier(threads + 1)
    admitted: list[str] = []

    def one() -> None:
        start.wait()
        with contextlib.suppress(RateLimited):
            admitted.append(router.acquire([model], length=1, tokens=1).id)

    pool = [threading.Thread(target=one) for _ in range(threads)]
    for thread in pool:
        thread.start()
    ready.wait()  # every process is up
    start.wait()
    for thread in pool:
        thread.join()
    results.put(admitted)
