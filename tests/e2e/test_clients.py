"""Client keys where the process matters: two gunicorn instances over one Redis enforce one
client's window exactly, through the openai SDK."""

from __future__ import annotations

import threading
from collections import Counter

import openai
import requests

from tests.harness import openai_client

ADMIN_KEY = "e2e-admin-key-5d1c"
ALICE_KEY = "e2e-alice-key-a83f"
BOB_KEY = "e2e-bob-key-2b9e"
LIMIT = 7
REQUESTS = 30


def test_two_instances_enforce_one_clients_window_exactly(fake_openai, gunicorn_server, redis_url) -> None:
    settings = {
        "models": [
            {
                "name": "small",
                "provider": "openai",
                "url": fake_openai.chat_url,
                "token": "sk-fake-upstream-key",
                "requests_per_minute": 100,
            }
        ],
        "clients": [
            {"name": "alice", "key": ALICE_KEY, "requests_per_minute": LIMIT},
            {"name": "bob", "key": BOB_KEY},
        ],
        "http": {"read_timeout": 10, "connect_timeout": 5},  # a loaded CI box is slow
        "server": {"heartbeat_seconds": 0},
    }
    env = {"AI_PROXY_API_KEYS": ADMIN_KEY, "AI_PROXY_STORAGE": redis_url}
    servers = [gunicorn_server(settings, env=env, workers=2), gunicorn_server(settings, env=env, workers=1)]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(REQUESTS)

    def fire(n: int) -> None:
        client = openai_client(servers[n % 2], api_key=ALICE_KEY)
        barrier.wait()
        try:
            client.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
            outcome = "ok"
        except openai.RateLimitError as exc:
            outcome = exc.code or "none"
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=fire, args=(n,)) for n in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes == Counter({"ok": LIMIT, "client_quota_exceeded": REQUESTS - LIMIT})
    assert len(fake_openai.chat_requests) == LIMIT

    # Another client is served, and the model's window holds only what was admitted.
    bob = openai_client(servers[1], api_key=BOB_KEY)
    assert bob.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}]).choices
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    quota = requests.get(f"{servers[0].url}/v1/quota", headers=admin, timeout=5).json()["data"][0]
    assert next(w["used"] for w in quota["windows"] if w["window"] == "requests_per_minute") == LIMIT + 1

    usage = requests.get(f"{servers[1].url}/v1/usage?days=1", headers=admin, timeout=5).json()["data"]
    assert {(r["client"], r["requests"]) for r in usage} == {("alice", LIMIT), ("bob", 1)}
    mine = requests.get(f"{servers[0].url}/v1/usage", headers={"x-api-key": ALICE_KEY}, timeout=5).json()
    assert [(r["client"], r["requests"]) for r in mine["data"]] == [("alice", LIMIT)]
