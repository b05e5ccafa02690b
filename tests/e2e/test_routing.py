"""Quota-aware routing end to end: priorities, fallback, cooldowns, breakers, groups, shared Redis."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import openai
import pytest
import requests

from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import Behavior
from tests.harness import openai_client

KEY = "test-client-key"
UPSTREAM_KEY = "sk-fake-upstream-key"


def model(fake: FakeOpenAI, name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "url": fake.chat_url, "token": UPSTREAM_KEY, **fields}


def config(models: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    base = {
        "models": models,
        "http": {"read_timeout": 1, "connect_timeout": 1, "stream_idle_timeout": 1},
        "retry": {"max_attempts": 1},
        "routing": {"cooldown_seconds": 30},
        "server": {"heartbeat_seconds": 0},
    }
    base.update(sections)
    return base


def served_upstream(fake: FakeOpenAI) -> list[str]:
    """Upstream model ids in the order the fake was asked."""
    return [r.json["model"] for r in fake.chat_requests]


def chat(client: openai.OpenAI, model_name: str = "SMALL", text: str = "hi"):
    raw = client.chat.completions.with_raw_response.create(
        model=model_name, messages=[{"role": "user", "content": text}]
    )
    return raw.headers, raw.parse()


def quota(server) -> dict[str, dict[str, Any]]:
    data = requests.get(f"{server.url}/v1/quota", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert data.status_code == 200
    return {entry["name"]: entry for entry in data.json()["data"]}


def window(entry: dict[str, Any], name: str) -> dict[str, Any]:
    return next(w for w in entry["windows"] if w["window"] == name)


def test_priority_then_least_recently_used(fake_openai, gunicorn_server) -> None:
    models = [
        model(fake_openai, "a", priority=1, model_size="SMALL", requests_per_minute=2),
        model(fake_openai, "b", priority=1, model_size="SMALL", requests_per_minute=2),
        model(fake_openai, "c", priority=2, model_size="SMALL"),
    ]
    server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": KEY})
    client = openai_client(server, api_key=KEY)
    served = [chat(client)[0]["X-AI-Proxy-Model"] for _ in range(6)]
    # a and b alternate (least recently used) until their minute quota is spent, then c serves
    assert sorted(served[:4]) == ["a", "a", "b", "b"]
    assert served[0] != served[1] and served[1] != served[2]
    assert served[4:] == ["c", "c"]
    entries = quota(server)
    assert window(entries["a"], "requests_per_minute")["used"] == 2
    assert window(entries["a"], "requests_per_minute")["remaining"] == 0
    assert 0 < window(entries["a"], "requests_per_minute")["reset_seconds"] <= 60


@pytest.mark.parametrize(
    "failure",
    [
        Behavior(status=500, json={"error": {"message": "boom", "type": "server_error"}}),
        Behavior(delay=2.5, json={}),  # longer than read_timeout
        Behavior(drop=True),
    ],
    ids=["500", "timeout", "dropped"],
)
def test_group_falls_back_and_rests_the_failing_model(fake_openai, gunicorn_server, failure) -> None:
    models = [
        model(fake_openai, "first", priority=1, model_size="SMALL"),
        model(fake_openai, "second", priority=2, model_size="SMALL"),
    ]
    server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": KEY})
    client = openai_client(server, api_key=KEY)
    fake_openai.push("chat", failure)
    headers, answer = chat(client)
    assert headers["X-AI-Proxy-Model"] == "second" and answer.model == "second"
    assert served_upstream(fake_openai) == ["first", "second"]
    # the failed model rests for cooldown_seconds: the next request goes straight to "second"
    headers, _ = chat(client)
    assert headers["X-AI-Proxy-Model"] == "second"
    entry = quota(server)["first"]
    assert entry["cooldown_until"] is not None and entry["cooldown_until"] - time.time() > 20
    assert entry["last_error"] is not None


def test_concrete_model_gets_no_fallback(fake_openai, gunicorn_server) -> None:
    models = [
        model(fake_openai, "first", model_size="SMALL"),
        model(fake_openai, "second", model_size="SMALL"),
    ]
    server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": KEY})
    fake_openai.push_error("server_error")
    with pytest.raises(openai.InternalServerError):
        chat(openai_client(server, api_key=KEY), "first")
    assert served_upstream(fake_openai) == ["first"]


def test_client_error_is_returned_at_once_without_fallback(fake_openai, gunicorn_server) -> None:
    models = [
        model(fake_openai, "first", priority=1, model_size="SMALL"),
        model(fake_openai, "second", priority=2, model_size="SMALL"),
    ]
    server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": KEY})
    fake_openai.push_error("invalid_request")
    with pytest.raises(openai.BadRequestError):
        chat(openai_client(server, api_key=KEY))
    assert served_upstream(fake_openai) == ["first"]
    assert quota(server)["first"]["cooldown_until"] is None


def test_upstream_429_rests_the_model_for_its_retry_after(fake_openai, gunicorn_server) -> None:
    models = [
        model(fake_openai, "first", priority=1, model_size="SMALL"),
        model(fake_openai, "second", priority=2, model_size="SMALL"),
    ]
    server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": KEY})
    client = openai_client(server, api_key=KEY)
    fake_openai.push_error("rate_limit", retry_after=2)
    assert chat(client)[0]["X-AI-Proxy-Model"] == "second"
    entry = quota(server)["first"]
    assert entry["cooldown_reason"] and "429" in entry["cooldown_reason"]
    assert 0.5 < entry["cooldown_until"] - time.time() <= 2.5
    assert chat(client)[0]["X-AI-Proxy-Model"] == "second"  # still resting
    time.sleep(2.2)
    assert chat(client)[0]["X-AI-Proxy-Model"] == "first"  # rested exactly as long as it was told


def test_remaining_zero_on_a_200_rests_the_model(fake_openai, gunicorn_server) -> None:
    models = [
        model(fake_openai, "first", priority=1, model_size="SMALL"),
        model(fake_openai, "second", priority=2, model_size="SMALL"),
    ]
    server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": KEY})
    client = openai_client(server, api_key=KEY)
    fake_openai.push_chat(
        headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s"}
    )
    assert chat(client)[0]["X-AI-Proxy-Model"] == "first"
    assert chat(client)[0]["X-AI-Proxy-Model"] == "second"
    assert 80 < quota(server)["first"]["cooldown_until"] - time.time() <= 90


def test_breaker_opens_after_fail_max_and_half_opens(fake_openai, gunicorn_server) -> None:
    models = [model(fake_openai, "solo", model_size="SMALL")]
    server = gunicorn_server(
        config(models, breaker={"fail_max": 2, "reset_timeout": 1.5}, routing={"cooldown_seconds": 0}),
        env={"AI_PROXY_API_KEYS": KEY},
    )
    client = openai_client(server, api_key=KEY)
    for _ in range(2):
        fake_openai.push_error("server_error")
        with pytest.raises(openai.InternalServerError):
            chat(client, "solo")
    assert quota(server)["solo"]["breaker"] == "open"
    with pytest.raises(openai.APIStatusError) as info:
        chat(client, "solo")
    assert info.value.status_code == 503
    assert len(fake_openai.chat_requests) == 2, "an open breaker must not call the upstream"
    time.sleep(1.7)
    assert quota(server)["solo"]["breaker"] == "half-open"
    assert chat(client, "solo")[1].choices[0].message.content == "Hello!"
    assert quota(server)["solo"]["breaker"] == "closed"


def test_spent_group_is_429_with_retry_after(fake_openai, gunicorn_server) -> None:
    models = [
        model(fake_openai, "a", model_size="SMALL", requests_per_minute=1),
        model(fake_openai, "b", model_size="SMALL", requests_per_minute=1, requests_per_day=100),
    ]
    server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": KEY})
    client = openai_client(server, api_key=KEY)
    assert {chat(client)[0]["X-AI-Proxy-Model"] for _ in range(2)} == {"a", "b"}
    response = requests.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "small", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "a:" in error["message"] and "b:" in error["message"] and "requests_per_minute" in error["message"]
    assert UPSTREAM_KEY not in response.text
    assert len(fake_openai.chat_requests) == 2


def test_success_carries_ratelimit_headers(fake_openai, gunicorn_server) -> None:
    models = [model(fake_openai, "a", model_size="SMALL", requests_per_minute=5, requests_per_day=100)]
    server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": KEY})
    headers, _ = chat(openai_client(server, api_key=KEY))
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "4"
    assert headers["x-ratelimit-reset-requests"].endswith("s")


def test_max_request_length_skips_short_models(fake_openai, gunicorn_server) -> None:
    models = [
        model(fake_openai, "short", priority=1, model_size="SMALL", max_request_length=20),
        model(fake_openai, "long", priority=2, model_size="SMALL", max_request_length=10_000),
    ]
    server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": KEY})
    client = openai_client(server, api_key=KEY)
    assert chat(client, text="hi")[0]["X-AI-Proxy-Model"] == "short"
    assert chat(client, text="x" * 500)[0]["X-AI-Proxy-Model"] == "long"
    with pytest.raises(openai.BadRequestError):
        chat(client, text="x" * 20_000)


def test_quota_counts_tokens_from_usage(fake_openai, gunicorn_server) -> None:
    models = [model(fake_openai, "a", model_size="SMALL", requests_per_minute=10, tokens_per_minute=100_000)]
    server = gunicorn_server(config(models), env={"AI_PROXY_API_KEYS": KEY})
    client = openai_client(server, api_key=KEY)
    total = sum(chat(client)[1].usage.total_tokens for _ in range(3))
    entry = quota(server)["a"]
    assert window(entry, "requests_per_minute")["used"] == 3
    assert window(entry, "tokens_per_minute")["used"] == total
    assert entry["limits"] == {"requests_per_minute": 10, "tokens_per_minute": 100_000}


def test_shared_redis_quota_across_workers_and_instances(fake_openai, gunicorn_server, redis_url) -> None:
    """Three workers plus a second gunicorn on another port admit exactly the limit between them."""
    models = [model(fake_openai, "a", model_size="SMALL", requests_per_minute=10)]
    env = {"AI_PROXY_API_KEYS": KEY, "AI_PROXY_STORAGE": redis_url}
    settings = config(models, http={"read_timeout": 10, "connect_timeout": 5})  # a loaded CI box is slow
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
            timeout=10,
        )
        with lock:
            statuses[response.status_code] += 1

    threads = [threading.Thread(target=fire, args=((first if i % 2 else second).url,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert statuses == Counter({200: 10, 429: 30})
    assert len(fake_openai.chat_requests) == 10
    assert window(quota(second)["a"], "requests_per_minute")["used"] == 10


def test_concrete_model_retries_a_short_429_and_returns_a_long_one(fake_openai, gunicorn_server) -> None:
    models = [model(fake_openai, "solo")]
    server = gunicorn_server(
        config(models, retry={"max_attempts": 3, "base_delay": 0.05, "max_delay": 2}),
        env={"AI_PROXY_API_KEYS": KEY},
    )
    client = openai_client(server, api_key=KEY)
    fake_openai.push_error("rate_limit", retry_after=1)
    started = time.monotonic()
    assert chat(client, "solo")[1].choices[0].message.content == "Hello!"
    assert time.monotonic() - started >= 0.9, "the retry waits as long as the upstream asked"
    assert len(fake_openai.chat_requests) == 2
    fake_openai.push_error("rate_limit", retry_after=20)
    with pytest.raises(openai.RateLimitError) as info:
        chat(client, "solo")
    assert len(fake_openai.chat_requests) == 3, "a long Retry-After is handed to the client at once"
    assert 15 <= int(info.value.response.headers["Retry-After"]) <= 20
