"""Quota shared through Redis by several gunicorn workers and instances: the one routing property that
needs real processes. (The routing logic through the API is tested in process: tests/api/test_routing.py.)"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import requests

from tests.builders import config, model

pytestmark = pytest.mark.e2e

KEY = "test-client-key"


def test_shared_redis_quota_across_workers_and_instances(fake_openai, gunicorn_server, redis_url) -> None:
    """Three workers plus a second gunicorn on another port admit exactly the limit between them."""
    settings = config(
        model(fake_openai.chat_url, "a", requests_per_minute=10),
        http={"read_timeout": 10, "connect_timeout": 5},  # a loaded CI box is slow
        retry={"max_attempts": 1},
        routing={"cooldown_seconds": 30},
        server={"heartbeat_seconds": 0},
    )
    env = {"AI_PROXY_API_KEYS": KEY, "AI_PROXY_STORAGE": redis_url}
    first = gunicorn_server(settings, env=env, workers=3)
    second = gunicorn_server(settings, env=env, workers=1)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(40)

    def fire(url: str) -> None:
        barrier.wait()
        response = requests.post(
            f"{url}/v1/chat/completions",
            json={"model": "SMALL", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        )
        with lock:
            statuses[response.status_code] += 1

    threads = [threading.Thread(target=fire, args=((first if i % 2 else second).url,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    assert statuses == Counter({200: 10, 429: 30})
    assert len(fake_openai.chat_requests) == 10
    used = requests.get(f"{second.url}/v1/quota", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    (entry,) = [e for e in used.json()["data"] if e["name"] == "a"]
    assert next(w for w in entry["windows"] if w["window"] == "requests_per_minute")["used"] == 10
