"""Routing and quota behaviour, run against MemoryStorage and RedisStorage alike (injected clock)."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from app.errors import (
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    ServiceUnavailable,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
)
from tests.routing.conftest import FakeClock, model


def windows(router, name: str) -> dict[str, dict]:
    entry = next(m for m in router.snapshot() if m["name"] == name)
    return {w["window"]: w for w in entry["windows"]}


def test_request_window_boundaries(make_router, clock: FakeClock) -> None:
    m = model(requests_per_minute=1)
    router = make_router([m])
    router.acquire([m], length=10, tokens=10)
    clock.advance(59.999)
    with pytest.raises(RateLimited) as refused:
        router.acquire([m], length=10, tokens=10)
    assert refused.value.retry_after == 1.0
    assert "groq/a: requests_per_minute spent (resets in 1s)" in refused.value.message
    clock.advance(0.001)
    assert router.acquire([m], length=10, tokens=10).model is m


def test_every_window_counts(make_router, clock: FakeClock) -> None:
    m = model(requests_per_minute=5, requests_per_hour=2)
    router = make_router([m])
    router.acquire([m], length=1, tokens=1)
    clock.advance(61)
    router.acquire([m], length=1, tokens=1)
    clock.advance(61)
    with pytest.raises(RateLimited, match="requests_per_hour spent") as refused:
        router.acquire([m], length=1, tokens=1)
    assert refused.value.retry_after == 3600 - 122
    clock.advance(3600 - 122)
    router.acquire([m], length=1, tokens=1)


def test_reservation_is_all_or_nothing(make_router, clock: FakeClock) -> None:
    m = model(requests_per_minute=5, requests_per_day=1, tokens_per_minute=1000, tokens_per_day=1500)
    router = make_router([m])
    router.acquire([m], length=1, tokens=1000)
    clock.advance(61)  # the minute windows are empty again; the day windows are not
    with pytest.raises(RateLimited, match="requests_per_day spent"):
        router.acquire([m], length=1, tokens=1000)
    used = {name: w["used"] for name, w in windows(router, m.name).items()}
    assert used == {
        "requests_per_minute": 0,
        "tokens_per_minute": 0,
        "requests_per_day": 1,
        "tokens_per_day": 1000,
    }


def test_tokens_are_reserved_then_settled(make_router, clock: FakeClock) -> None:
    m = model(tokens_per_minute=1000)
    router = make_router([m])
    first = router.acquire([m], length=1, tokens=500)
    router.acquire([m], length=1, tokens=400)
    with pytest.raises(RateLimited, match="tokens_per_minute spent"):
        router.acquire([m], length=1, tokens=500)
    router.succeeded(first, {}, used_tokens=100)
    assert windows(router, m.name)["tokens_per_minute"]["used"] == 500
    router.acquire([m], length=1, tokens=500)
    clock.advance(60)
    assert windows(router, m.name)["tokens_per_minute"]["used"] == 0
    router.succeeded(first, {}, used_tokens=900)  # late: it no longer counts anywhere
    assert windows(router, m.name)["tokens_per_minute"]["used"] == 0


def test_late_settlement_only_changes_windows_still_counting_it(make_router, clock: FakeClock) -> None:
    m = model(tokens_per_minute=1000, tokens_per_day=10_000)
    router = make_router([m])
    res = router.acquire([m], length=1, tokens=500)
    clock.advance(60)
    used = {name: w["used"] for name, w in windows(router, m.name).items()}
    assert used == {"tokens_per_minute": 0, "tokens_per_day": 500}
    router.succeeded(res, {}, used_tokens=800)
    used = {name: w["used"] for name, w in windows(router, m.name).items()}
    assert used == {"tokens_per_minute": 0, "tokens_per_day": 800}


def test_token_wait_is_until_enough_tokens_leave(make_router, clock: FakeClock) -> None:
    m = model(tokens_per_minute=1000)
    router = make_router([m])
    router.acquire([m], length=1, tokens=300)
    clock.advance(10)
    router.acquire([m], length=1, tokens=300)
    clock.advance(10)
    router.acquire([m], length=1, tokens=300)
    with pytest.raises(RateLimited) as refused:  # 900 + 500 > 1000: two entries must leave
        router.acquire([m], length=1, tokens=500)
    assert refused.value.retry_after == 50.0


def test_request_bigger_than_a_token_limit_is_a_client_error(make_router) -> None:
    m = model(tokens_per_minute=1000)
    router = make_router([m])
    with pytest.raises(InvalidRequest, match=r"needs ~1001 tokens, over tokens_per_minute 1000") as err:
        router.acquire([m], length=1, tokens=1001)
    assert err.value.code == "context_length_exceeded"


def test_day_resets_on_the_clock(make_router, clock: FakeClock) -> None:
    pacific = ZoneInfo("America/Los_Angeles")
    clock.now = datetime(2024, 6, 1, 23, 59, 30, tzinfo=pacific).timestamp()
    calendar = model("gemini/cal", requests_per_day=1, day_resets_at="00:00", timezone="America/Los_Angeles")
    rolling = model("gemini/roll", requests_per_day=1)
    router = make_router([calendar, rolling])
    router.acquire([calendar], length=1, tokens=1)
    router.acquire([rolling], length=1, tokens=1)
    with pytest.raises(RateLimited, match=r"requests_per_day spent \(resets in 30s\)") as refused:
        router.acquire([calendar], length=1, tokens=1)
    assert refused.value.retry_after == 30.0
    assert windows(router, calendar.name)["requests_per_day"]["reset_seconds"] == 30.0
    clock.advance(30)  # midnight in Los Angeles
    router.acquire([calendar], length=1, tokens=1)
    with pytest.raises(RateLimited):
        router.acquire([rolling], length=1, tokens=1)


def test_upstream_429_rests_the_model(make_router, clock: FakeClock) -> None:
    a, b = model("groq/a", model_size="small"), model("groq/b", model_size="small", priority=1)
    router = make_router([a, b])
    res = router.acquire([a, b], length=1, tokens=1)
    assert res.model is a
    router.failed(res, RateLimited("slow down", retry_after=12))
    assert router.acquire([a, b], length=1, tokens=1).model is b
    with pytest.raises(RateLimited) as refused:
        router.acquire([a], length=1, tokens=1)
    assert refused.value.retry_after == 12.0
    assert "groq/a: cooling down 12s after upstream 429" in refused.value.message
    clock.advance(12)
    assert router.acquire([a, b], length=1, tokens=1).model is a


def test_cooldowns_by_error_kind(make_router, clock: FakeClock) -> None:
    m = model()
    router = make_router([m], cooldown=30)
    router.failed(router.acquire([m], length=1, tokens=1), RateLimited("429 without Retry-After"))
    with pytest.raises(RateLimited, match="cooling down 30s after upstream 429"):
        router.acquire([m], length=1, tokens=1)
    clock.advance(30)
    router.failed(router.acquire([m], length=1, tokens=1), UpstreamTimeout("read timed out"))
    with pytest.raises(RateLimited, match="cooling down 30s after upstream timeout"):
        router.acquire([m], length=1, tokens=1)
    clock.advance(30)
    router.failed(router.acquire([m], length=1, tokens=1), UpstreamBadRequest("bad tool schema"))
    router.acquire([m], length=1, tokens=1)  # a client error rests nothing


def test_a_shorter_rest_never_cuts_a_longer_one(make_router, clock: FakeClock) -> None:
    m = model()
    router = make_router([m])
    first, second = router.acquire([m], length=1, tokens=1), router.acquire([m], length=1, tokens=1)
    router.failed(first, RateLimited("x", retry_after=60))
    router.failed(second, RateLimited("x", retry_after=5))
    clock.advance(10)
    with pytest.raises(RateLimited, match="cooling down 50s"):
        router.acquire([m], length=1, tokens=1)


def test_failed_settles_refused_requests_to_zero_tokens(make_router) -> None:
    m = model(tokens_per_minute=1000)
    router = make_router([m])
    router.failed(router.acquire([m], length=1, tokens=700), UpstreamBadRequest("invalid"))
    assert windows(router, m.name)["tokens_per_minute"]["used"] == 0
    router.acquire([m], length=1, tokens=700)


def test_priority_then_least_recently_used(make_router, clock: FakeClock) -> None:
    a = model("groq/a", priority=1, model_size="big")
    b = model("groq/b", priority=1, model_size="big")
    best = model("groq/best", priority=0, model_size="big", requests_per_minute=1)
    router = make_router([a, b, best])
    group = router.resolve("BIG", "chat")
    assert [m.name for m in group] == ["groq/best", "groq/a", "groq/b"]
    picked = []
    for _ in range(5):
        picked.append(router.acquire(group, length=1, tokens=1).model.name)
        clock.advance(1)
    assert picked == ["groq/best", "groq/a", "groq/b", "groq/a", "groq/b"]
    clock.advance(60)
    assert router.acquire(group, length=1, tokens=1).model.name == "groq/best"


def test_max_request_length_skips_a_model(make_router) -> None:
    short = model("groq/short", max_request_length=100, model_size="small")
    long = model("groq/long", priority=5, model_size="small")
    router = make_router([short, long])
    assert router.acquire([short, long], length=100, tokens=1).model is short
    assert router.acquire([short, long], length=101, tokens=1).model is long
    with pytest.raises(InvalidRequest, match="groq/short: request longer than max_request_length 100"):
        router.acquire([short], length=101, tokens=1)


def test_resolve_kinds_groups_and_unknown_names(make_router) -> None:
    chat = model("groq/chat", model_size="Small")
    image = model("cloudflare/flux", model_size="small", kind="image")
    off = model("groq/off", model_size="small", enabled=False)
    router = make_router([chat, image, off])
    assert router.resolve("small", "chat") == [chat]
    assert router.resolve("SMALL", "image") == [image]
    assert router.resolve("groq/chat", "chat") == [chat]
    for name, kind in [
        ("cloudflare/flux", "chat"),
        ("medium", "chat"),
        ("GROQ/CHAT", "chat"),
    ]:
        with pytest.raises(ModelNotFound) as missing:
            router.resolve(name, kind)
        assert missing.value.message == f"The model '{name}' does not exist"
        assert missing.value.status == 404
    with pytest.raises(ModelNotFound) as missing:  # a configured but disabled model says so (#16)
        router.resolve("groq/off", "chat")
    assert missing.value.message.startswith("The model 'groq/off' is disabled: check enabled")


def test_exclude_and_the_error_when_everything_was_tried(make_router, clock: FakeClock) -> None:
    a, b = model("groq/a", model_size="small"), model("groq/b", model_size="small", priority=1)
    router = make_router([a, b])
    first = router.acquire([a, b], length=1, tokens=1)
    router.failed(first, UpstreamError("boom"))
    assert router.acquire([a, b], length=1, tokens=1, exclude=["groq/a"]).model is b
    with pytest.raises(RateLimited) as refused:  # a still rests: that is when to come back
        router.acquire([a, b], length=1, tokens=1, exclude=["groq/a", "groq/b"])
    assert refused.value.retry_after == 30.0
    assert "groq/b: already tried" in refused.value.message
    clock.advance(30)
    with pytest.raises(ServiceUnavailable, match="groq/a: already tried; groq/b: already tried"):
        router.acquire([a, b], length=1, tokens=1, exclude=["groq/a", "groq/b"])


def test_refusal_lists_every_candidate_and_why(make_router, clock: FakeClock) -> None:
    spent = model("groq/x", requests_per_minute=1, model_size="small")
    cooling = model("gemini/y", model_size="small")
    short = model("z", max_request_length=4000, model_size="small")
    router = make_router([spent, cooling, short])
    router.acquire([spent], length=1, tokens=1)
    router.failed(router.acquire([cooling], length=1, tokens=1), RateLimited("429", retry_after=100))
    clock.advance(48)
    with pytest.raises(RateLimited) as refused:
        router.acquire(router.resolve("small", "chat"), length=5000, tokens=1)
    message = refused.value.message
    assert "groq/x: requests_per_minute spent (resets in 12s)" in message
    assert "gemini/y: cooling down 52s after upstream 429" in message
    assert "z: request longer than max_request_length 4000" in message
    assert refused.value.retry_after == 12.0
    assert "sk-secret" not in message


def test_ratelimit_headers_follow_the_tightest_request_window(make_router, clock: FakeClock) -> None:
    m = model(requests_per_minute=10, requests_per_hour=5, tokens_per_minute=10_000)
    free = model("groq/free")
    router = make_router([m, free])
    router.acquire([m], length=1, tokens=1)
    assert router.ratelimit_headers(m) == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "1h0m0s",
    }
    clock.advance(90)
    assert router.ratelimit_headers(m)["x-ratelimit-reset-requests"] == "58m30s"
    assert router.ratelimit_headers(free) == {}
    other = make_router([m, free])  # another worker, which has not reserved anything itself
    assert other.ratelimit_headers(m) == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "58m30s",
    }


def test_upstream_rate_limit_headers_rest_the_model(make_router, clock: FakeClock) -> None:
    m = model()
    router = make_router([m])
    router.succeeded(router.acquire([m], length=1, tokens=1), {"X-RateLimit-Remaining-Requests": "3"}, 5)
    router.acquire([m], length=1, tokens=1)
    hints = {"X-Ratelimit-Remaining-Requests": "0", "X-Ratelimit-Reset-Requests": "6m0s"}
    router.succeeded(router.acquire([m], length=1, tokens=1), hints, 5)
    with pytest.raises(
        RateLimited, match="cooling down 6m0s after upstream reported its requests"
    ) as refused:
        router.acquire([m], length=1, tokens=1)
    assert refused.value.retry_after == 360.0
    clock.advance(360)
    hints = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "7.66s"}
    router.succeeded(router.acquire([m], length=1, tokens=1), hints, 5)
    with pytest.raises(RateLimited) as refused:
        router.acquire([m], length=1, tokens=1)
    assert refused.value.retry_after == 8.0


def test_snapshot(make_router, clock: FakeClock) -> None:
    m = model(
        requests_per_minute=10,
        tokens_per_minute=5000,
        requests_per_day=100,
        max_request_length=8000,
        model_size="big",
        priority=2,
    )
    idle = model("openrouter/idle", provider="openrouter")
    router = make_router([m, idle])
    first = router.acquire([m], length=1, tokens=1000)
    clock.advance(20)
    router.succeeded(first, {}, used_tokens=400)
    router.failed(router.acquire([m], length=1, tokens=300), UpstreamError("upstream said 500"))
    clock.advance(10)
    data = router.snapshot()
    json.dumps(data)
    got, other = data
    assert got["name"] == "groq/a" and got["provider"] == "groq" and got["group"] == "BIG"
    assert got["kind"] == "chat" and got["priority"] == 2
    assert got["limits"] == {
        "requests_per_minute": 10,
        "tokens_per_minute": 5000,
        "requests_per_day": 100,
        "max_request_length": 8000,
    }
    assert got["windows"] == [
        {"window": "requests_per_minute", "limit": 10, "used": 2, "remaining": 8, "reset_seconds": 30.0},
        {"window": "tokens_per_minute", "limit": 5000, "used": 700, "remaining": 4300, "reset_seconds": 30.0},
        {"window": "requests_per_day", "limit": 100, "used": 2, "remaining": 98, "reset_seconds": 86370.0},
    ]
    assert got["cooldown_until"] == pytest.approx(clock.now - 10 + 30)
    assert got["cooldown_reason"] == "upstream error 502"
    assert got["breaker"] == "closed"
    assert got["last_error"] == {"message": "upstream said 500", "at": pytest.approx(clock.now - 10)}
    assert got["last_used"] == pytest.approx(clock.now - 10)
    assert other["windows"] == [] and other["last_used"] is None and other["last_error"] is None
    assert other["cooldown_until"] is None and other["breaker"] == "closed"
