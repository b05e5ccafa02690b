"""Quota-aware routing through the API, in process: priorities, fallback, cooldowns, breakers, groups.
The router runs on an injected clock (advanced instead of slept) and the gateway's retry waits are
recorded instead of slept. (Shared Redis quota across gunicorn workers: tests/e2e/test_routing.py.)"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.builders import UPSTREAM_KEY, config, model
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import Behavior
from tests.harness import InProcessProxy

KEY = "test-client-key"


def routing_config(fake: FakeOpenAI, *models: dict[str, Any], **sections: Any) -> dict[str, Any]:
    sections.setdefault("http", {"read_timeout": 2, "connect_timeout": 2, "stream_idle_timeout": 2})
    sections.setdefault("retry", {"max_attempts": 1})
    sections.setdefault("routing", {"cooldown_seconds": 30})
    sections.setdefault("server", {"heartbeat_seconds": 0})
    return config(*models, **sections)


@pytest.fixture
def build(fake_openai: FakeOpenAI, in_process):
    """build(model specs..., **sections) -> an InProcessProxy over fake_openai with KEY as client key;
    a spec is (name, fields)."""

    def make(*specs: tuple[str, dict[str, Any]], **sections: Any) -> InProcessProxy:
        models = [model(fake_openai.chat_url, name, **{"group": None, **fields}) for name, fields in specs]
        return in_process(routing_config(fake_openai, *models, **sections), env={"AI_PROXY_API_KEYS": KEY})

    return make


def served_upstream(fake: FakeOpenAI) -> list[str]:
    """Upstream model ids in the order the fake was asked."""
    return [r.json["model"] for r in fake.chat_requests]


def chat(proxy: InProcessProxy, model_name: str = "SMALL", text: str = "hi"):
    raw = proxy.openai(KEY).chat.completions.with_raw_response.create(
        model=model_name, messages=[{"role": "user", "content": text}]
    )
    return raw.headers, raw.parse()


def quota(proxy: InProcessProxy) -> dict[str, dict[str, Any]]:
    data = proxy.client.get("/v1/quota", headers={"Authorization": f"Bearer {KEY}"})
    assert data.status_code == 200
    return {entry["name"]: entry for entry in data.json["data"]}


def window(entry: dict[str, Any], name: str) -> dict[str, Any]:
    return next(w for w in entry["windows"] if w["window"] == name)


def rests_for(proxy: InProcessProxy, name: str) -> float:
    """Seconds of the router's clock until `name`'s cooldown ends."""
    return quota(proxy)[name]["cooldown_until"] - proxy.clock()


def test_priority_then_least_recently_used(build) -> None:
    proxy = build(
        ("a", {"priority": 1, "group": "SMALL", "requests_per_minute": 2}),
        ("b", {"priority": 1, "group": "SMALL", "requests_per_minute": 2}),
        ("c", {"priority": 2, "group": "SMALL"}),
    )
    served = [chat(proxy)[0]["X-AI-Proxy-Model"] for _ in range(6)]
    # a and b alternate (least recently used) until their minute quota is spent, then c serves
    assert sorted(served[:4]) == ["a", "a", "b", "b"]
    assert served[0] != served[1] and served[1] != served[2]
    assert served[4:] == ["c", "c"]
    entries = quota(proxy)
    assert window(entries["a"], "requests_per_minute")["used"] == 2
    assert window(entries["a"], "requests_per_minute")["remaining"] == 0
    assert 0 < window(entries["a"], "requests_per_minute")["reset_seconds"] <= 60
    # A minute later (on the router's clock) a and b serve again.
    proxy.clock.advance(61)
    assert chat(proxy)[0]["X-AI-Proxy-Model"] in {"a", "b"}


@pytest.mark.parametrize(
    "failure",
    [
        Behavior(status=500, json={"error": {"message": "boom", "type": "server_error"}}),
        Behavior(delay=30, json={}),  # far longer than read_timeout (2 s)
        Behavior(drop=True),
    ],
    ids=["500", "timeout", "dropped"],
)
def test_group_falls_back_and_rests_the_failing_model(build, fake_openai, failure) -> None:
    proxy = build(("first", {"priority": 1, "group": "SMALL"}), ("second", {"priority": 2, "group": "SMALL"}))
    fake_openai.push("chat", failure)
    headers, answer = chat(proxy)
    assert headers["X-AI-Proxy-Model"] == "second" and answer.model == "second"
    assert served_upstream(fake_openai) == ["first", "second"]
    # the failed model rests for cooldown_seconds: the next request goes straight to "second"
    headers, _ = chat(proxy)
    assert headers["X-AI-Proxy-Model"] == "second"
    assert rests_for(proxy, "first") == pytest.approx(30, abs=0.001)
    assert quota(proxy)["first"]["last_error"] is not None
    proxy.clock.advance(31)  # rested: "first" serves again
    assert chat(proxy)[0]["X-AI-Proxy-Model"] == "first"


def test_concrete_model_gets_no_fallback(build, fake_openai) -> None:
    proxy = build(("first", {"group": "SMALL"}), ("second", {"group": "SMALL"}))
    fake_openai.push_error("server_error")
    with pytest.raises(openai.InternalServerError):
        chat(proxy, "first")
    assert served_upstream(fake_openai) == ["first"]


def test_client_error_is_returned_at_once_without_fallback(build, fake_openai) -> None:
    proxy = build(("first", {"priority": 1, "group": "SMALL"}), ("second", {"priority": 2, "group": "SMALL"}))
    fake_openai.push_error("invalid_request")
    with pytest.raises(openai.BadRequestError):
        chat(proxy)
    assert served_upstream(fake_openai) == ["first"]
    assert quota(proxy)["first"]["cooldown_until"] is None


def test_upstream_429_rests_the_model_for_its_retry_after(build, fake_openai) -> None:
    proxy = build(("first", {"priority": 1, "group": "SMALL"}), ("second", {"priority": 2, "group": "SMALL"}))
    fake_openai.push_error("rate_limit", retry_after=2)
    assert chat(proxy)[0]["X-AI-Proxy-Model"] == "second"
    entry = quota(proxy)["first"]
    assert entry["cooldown_reason"] and "429" in entry["cooldown_reason"]
    assert rests_for(proxy, "first") == pytest.approx(2, abs=0.001)
    proxy.clock.advance(1.5)
    assert chat(proxy)[0]["X-AI-Proxy-Model"] == "second"  # still resting
    proxy.clock.advance(0.6)
    assert chat(proxy)[0]["X-AI-Proxy-Model"] == "first"  # rested exactly as long as it was told


def test_remaining_zero_on_a_200_rests_the_model(build, fake_openai) -> None:
    proxy = build(("first", {"priority": 1, "group": "SMALL"}), ("second", {"priority": 2, "group": "SMALL"}))
    fake_openai.push_chat(
        headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s"}
    )
    assert chat(proxy)[0]["X-AI-Proxy-Model"] == "first"
    assert chat(proxy)[0]["X-AI-Proxy-Model"] == "second"
    assert rests_for(proxy, "first") == pytest.approx(90, abs=0.001)


def test_breaker_opens_after_fail_max_and_half_opens(build, fake_openai) -> None:
    proxy = build(
        ("solo", {"group": "SMALL"}),
        breaker={"fail_max": 2, "reset_timeout": 1.5},
        routing={"cooldown_seconds": 0},
    )
    for _ in range(2):
        fake_openai.push_error("server_error")
        with pytest.raises(openai.InternalServerError):
            chat(proxy, "solo")
    assert quota(proxy)["solo"]["breaker"] == "open"
    with pytest.raises(openai.APIStatusError) as info:
        chat(proxy, "solo")
    assert info.value.status_code == 503
    assert len(fake_openai.chat_requests) == 2, "an open breaker must not call the upstream"
    proxy.clock.advance(1.0)
    assert quota(proxy)["solo"]["breaker"] == "open"  # not before reset_timeout
    proxy.clock.advance(0.7)
    assert quota(proxy)["solo"]["breaker"] == "half-open"
    assert chat(proxy, "solo")[1].choices[0].message.content == "Hello!"
    assert quota(proxy)["solo"]["breaker"] == "closed"


def test_spent_group_is_429_with_retry_after(build, fake_openai) -> None:
    proxy = build(
        ("a", {"group": "SMALL", "requests_per_minute": 1}),
        ("b", {"group": "SMALL", "requests_per_minute": 1, "requests_per_day": 100}),
    )
    assert {chat(proxy)[0]["X-AI-Proxy-Model"] for _ in range(2)} == {"a", "b"}
    response = proxy.client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = response.json["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "a:" in error["message"] and "b:" in error["message"] and "requests_per_minute" in error["message"]
    assert UPSTREAM_KEY not in response.get_data(as_text=True)
    assert len(fake_openai.chat_requests) == 2


def test_success_carries_ratelimit_headers(build) -> None:
    proxy = build(("a", {"group": "SMALL", "requests_per_minute": 5, "requests_per_day": 100}))
    headers, _ = chat(proxy)
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "4"
    assert headers["x-ratelimit-reset-requests"].endswith("s")


def test_max_request_length_skips_short_models(build) -> None:
    proxy = build(
        ("short", {"priority": 1, "group": "SMALL", "max_request_length": 20}),
        ("long", {"priority": 2, "group": "SMALL", "max_request_length": 10_000}),
    )
    assert chat(proxy, text="hi")[0]["X-AI-Proxy-Model"] == "short"
    assert chat(proxy, text="x" * 500)[0]["X-AI-Proxy-Model"] == "long"
    with pytest.raises(openai.BadRequestError):
        chat(proxy, text="x" * 20_000)


def test_quota_counts_tokens_from_usage(build) -> None:
    proxy = build(("a", {"group": "SMALL", "requests_per_minute": 10, "tokens_per_minute": 100_000}))
    total = sum(chat(proxy)[1].usage.total_tokens for _ in range(3))
    entry = quota(proxy)["a"]
    assert window(entry, "requests_per_minute")["used"] == 3
    assert window(entry, "tokens_per_minute")["used"] == total
    assert entry["limits"] == {"requests_per_minute": 10, "tokens_per_minute": 100_000}


def test_concrete_model_retries_a_short_429_and_returns_a_long_one(build, fake_openai) -> None:
    proxy = build(("solo", {}), retry={"max_attempts": 3, "base_delay": 0.05, "max_delay": 2})
    fake_openai.push_error("rate_limit", retry_after=1)
    assert chat(proxy, "solo")[1].choices[0].message.content == "Hello!"
    assert len(proxy.sleeps) == 1 and 1.0 <= proxy.sleeps[0] <= 2, "the retry waits as long as asked"
    assert len(fake_openai.chat_requests) == 2
    fake_openai.push_error("rate_limit", retry_after=20)
    with pytest.raises(openai.RateLimitError) as info:
        chat(proxy, "solo")
    assert len(fake_openai.chat_requests) == 3, "a long Retry-After is handed to the client at once"
    assert len(proxy.sleeps) == 1
    assert 15 <= int(info.value.response.headers["Retry-After"]) <= 20
