"""Key pools end to end through gunicorn, against an upstream that keeps each key's own quota."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import requests

from app import create_app
from app.config import parse_config
from tests.fakes.openai import KeyPoolFake

CLIENT_KEY = "test-client-key-0123456789"
POOL = ["sk-pool-key-one-1111", "sk-pool-key-two-2222", "sk-pool-key-three-3333"]
BAD = "sk-revoked-key-4444"
NO_C = "sk-no-access-to-c-5555"  # may use model d, not model c
BOTH = "sk-every-model-6666"
GOOD = "sk-good-key-7777"


def model(fake: KeyPoolFake, name: str, keys: list[str], **fields: Any) -> dict[str, Any]:
    return {"name": f"openai/{name}", "provider": "openai", "url": fake.chat_url, "keys": keys, **fields}


def config(models: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    return {
        "models": models,
        "http": {"read_timeout": 10, "connect_timeout": 5, "stream_idle_timeout": 10},
        "retry": {"max_attempts": 1},
        "routing": {"cooldown_seconds": 30},
        "server": {"heartbeat_seconds": 0},
        **sections,
    }


def ask(url: str, name: str) -> requests.Response:
    return requests.post(
        f"{url}/v1/chat/completions",
        json={"model": f"openai/{name}", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=15,
    )


def keys_of(server_url: str, name: str) -> dict[str, dict[str, Any]]:
    answer = requests.get(
        f"{server_url}/v1/quota", headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=5
    )
    assert answer.status_code == 200
    entry = next(e for e in answer.json()["data"] if e["name"] == f"openai/{name}")
    return {k["key"]: k for k in entry["keys"]}


def test_pooled_keys_serve_within_each_keys_quota(gunicorn_server) -> None:
    """Three scenarios on one server: 3 keys x 5/min serve 15 requests with no upstream 429; a
    revoked key is called once and then left alone; a key without access to one model serves another."""
    with KeyPoolFake([*POOL, GOOD, NO_C, BOTH], requests_per_minute=5, no_access={NO_C: ["c"]}) as fake:
        models = [
            model(fake, "pooled", POOL, requests_per_minute=5),
            model(fake, "with-bad", [BAD, GOOD]),
            model(fake, "c", [NO_C, BOTH]),
            model(fake, "d", [NO_C, BOTH]),
        ]
        server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": CLIENT_KEY})

        statuses = Counter(ask(server.url, "pooled").status_code for _ in range(15))
        assert statuses == Counter({200: 15})
        assert [fake.calls[key] for key in POOL] == [5, 5, 5]
        assert not any(fake.refusals[key, 429] for key in POOL), (
            "the proxy never made a key exceed its window"
        )
        over = ask(server.url, "pooled")
        assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
        assert sum(fake.calls[key] for key in POOL) == 15, (
            "the 16th request was refused without an upstream call"
        )
        pooled = keys_of(server.url, "pooled")
        assert [pooled[f"#{n}"]["windows"][0]["used"] for n in (1, 2, 3)] == [5, 5, 5]

        for _ in range(4):
            answer = ask(server.url, "with-bad")
            assert answer.status_code == 200
            assert answer.json()["model"] == "openai/with-bad"
        assert fake.calls[BAD] == 1, "a revoked key is called once, then rests"
        rested = keys_of(server.url, "with-bad")["#1"]["cooldown"]
        assert rested is not None and rested["class"] == "auth"

        for _ in range(3):
            assert ask(server.url, "c").status_code == 200
        assert fake.refusals[NO_C, 404] == 1, "the key without access was tried once for model c"
        assert fake.calls[NO_C] == 1
        for _ in range(2):  # d's keys take turns, least recently used first
            assert ask(server.url, "d").status_code == 200
        assert fake.calls[NO_C] == 2, "the same key still serves model d"
        assert fake.refusals[NO_C, 404] == 1
        cooldowns = keys_of(server.url, "c")
        assert cooldowns["#1"]["cooldown"]["class"] == "unavailable"
        assert keys_of(server.url, "d")["#1"]["cooldown"] is None

        log = server.log_text()
        for secret in [*POOL, BAD, GOOD, NO_C, BOTH]:
            assert secret not in log
        assert "key=#" in log


def test_two_instances_share_one_pool_over_redis(gunicorn_server, redis_url) -> None:
    """A gunicorn instance (two workers) and an in-process instance over one Redis: 2 keys x 5/min
    admit exactly 10 of 24 concurrent requests between them, 5 per key, and no upstream 429."""
    keys = POOL[:2]
    with KeyPoolFake(keys, requests_per_minute=5) as fake:
        settings = config([model(fake, "pooled", keys, requests_per_minute=5)])
        env = {"AI_PROXY_API_KEYS": CLIENT_KEY, "AI_PROXY_STORAGE": redis_url}
        server = gunicorn_server(settings, env=env, workers=2)
        local = create_app(parse_config(settings, env)).test_client()
        statuses: Counter[int] = Counter()
        lock = threading.Lock()
        barrier = threading.Barrier(24)

        def fire(remote: bool) -> None:
            barrier.wait()
            if remote:
                status = ask(server.url, "pooled").status_code
            else:
                status = local.post(
                    "/v1/chat/completions",
                    json={"model": "openai/pooled", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                ).status_code
            with lock:
                statuses[status] += 1

        threads = [threading.Thread(target=fire, args=(i % 2 == 0,)) for i in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert statuses == Counter({200: 10, 429: 14})
        assert [fake.calls[key] for key in keys] == [5, 5]
        assert not any(fake.refusals.values())
