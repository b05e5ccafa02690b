"""Issue 10: bad usage numbers never wreck a window, and a storage failure at settle time never
costs the client its answer. Every test runs against MemoryStorage and RedisStorage."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from app.config import BreakerConfig, RoutingConfig
from app.errors import RateLimited, ServiceUnavailable, UpstreamError
from app.routing import Router
from app.routing.limits import US, plan_for
from app.routing.router import MAX_TOKENS, valid_tokens
from app.routing.storage import Pool, SlotPlan, Storage
from tests.routing.conftest import FakeClock, model


def tokens_used(router: Router, name: str) -> int:
    entry = next(m for m in router.snapshot() if m["name"] == name)
    return next(w["used"] for w in entry["windows"] if w["window"] == "tokens_per_minute")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10, 10),
        (0, 0),
        (12.0, 12),
        (-100_000_000, None),
        (-1, None),
        (1.5, None),
        (float("nan"), None),
        (float("inf"), None),
        (True, None),
        ("100", None),
        (None, None),
        (10**30, MAX_TOKENS),
    ],
)
def test_valid_tokens(value: object, expected: int | None) -> None:
    assert valid_tokens(value) == expected


@pytest.mark.parametrize("bad", [-100_000_000, -1, 1.5, "12", True])
def test_a_bad_usage_number_never_unlimits_a_model(make_router, clock: FakeClock, bad: object) -> None:
    """The issue's repro: `"usage": {"total_tokens": -100000000}` on a tokens_per_minute model."""
    m = model(tokens_per_minute=1000)
    router = make_router([m])
    poisoned = router.acquire([m], length=1, tokens=400)
    router.succeeded(poisoned, {}, used_tokens=bad)
    assert 400 <= tokens_used(router, m.name) <= 1000
    router.acquire([m], length=1, tokens=400)
    with pytest.raises(RateLimited, match="tokens_per_minute spent"):  # still limiting
        router.acquire([m], length=1, tokens=400)
    clock.advance(61)  # the poisoned entry leaves the window: nothing breaks
    assert tokens_used(router, m.name) == 0
    router.acquire([m], length=1, tokens=900)
    assert tokens_used(router, m.name) == 900


def test_a_huge_usage_number_is_clamped(make_router, clock: FakeClock) -> None:
    m = model(tokens_per_minute=1000)
    router = make_router([m])
    router.succeeded(router.acquire([m], length=1, tokens=400), {}, used_tokens=10**30)
    assert tokens_used(router, m.name) == MAX_TOKENS
    with pytest.raises(RateLimited, match="tokens_per_minute spent"):
        router.acquire([m], length=1, tokens=1)
    clock.advance(61)
    router.acquire([m], length=1, tokens=1000)


def test_storage_survives_a_negative_count_it_was_handed(make_storage) -> None:
    """Storage code never fails on a value it wrote itself, even one no router should send."""
    storage = make_storage()
    slot = SlotPlan(plan_for(model(tokens_per_minute=1000)), "groq/a#k1", "k1")
    pool = Pool((slot,))
    t0 = 1_700_000_000 * US

    def reserve(tokens: int, now: int, rid: str) -> bool:
        return storage.reserve([pool], (), tokens, now, rid, 0).index == 0

    def used(now: int) -> int:
        return storage.inspect([slot], now)[0].spans[0].tokens

    assert reserve(300, t0, "r1")
    storage.settle(slot, "r1", 300, -100_000_000)
    assert 0 <= used(t0) <= 1000
    assert reserve(1000, t0 + 1, "r2")
    assert not reserve(1, t0 + 2, "r3")  # still limiting
    later = t0 + 62 * US  # both entries have left the window: nothing breaks
    assert used(later) == 0
    assert reserve(1000, later, "r4")
    assert not reserve(1, later, "r5")
    assert used(later) == 1000


class FailingOutcomes(Storage):
    """A storage whose reservations work but whose outcome bookkeeping fails, as Redis going away
    between the reservation and the end of the answer would."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def reserve(self, *args, **kwargs):
        return self.inner.reserve(*args, **kwargs)

    def inspect(self, *args, **kwargs):
        return self.inner.inspect(*args, **kwargs)

    def breaker_storage(self, name: str):
        return self.inner.breaker_storage(name)

    def settle(self, *args, **kwargs) -> None:
        raise ServiceUnavailable("quota storage unavailable")

    def report(self, *args, **kwargs) -> None:
        raise ServiceUnavailable("quota storage unavailable")

    def set_breaker(self, *args, **kwargs) -> None:
        raise ServiceUnavailable("quota storage unavailable")

    def rest(self, *args, **kwargs) -> None:
        raise ServiceUnavailable("quota storage unavailable")

    def restore_key(self, *args, **kwargs) -> None:
        raise ServiceUnavailable("quota storage unavailable")

    def settle_client(self, *args, **kwargs) -> None:
        raise ServiceUnavailable("quota storage unavailable")

    def record_usage(self, *args, **kwargs) -> None:
        raise ServiceUnavailable("quota storage unavailable")

    def usage(self, *args, **kwargs):
        return self.inner.usage(*args, **kwargs)


def records(caplog: pytest.LogCaptureFixture) -> Sequence[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ai_proxy.routing" and "could not record" in r.message]


def test_settle_is_best_effort(make_storage, clock: FakeClock, caplog) -> None:
    m = model(tokens_per_minute=1000)
    router = Router([m], FailingOutcomes(make_storage()), RoutingConfig(), BreakerConfig(), clock=clock)
    assert router.settle_failures == 0
    res = router.acquire([m], length=1, tokens=100)
    with caplog.at_level(logging.WARNING, logger="ai_proxy.routing"):
        router.succeeded(res, {"x-ratelimit-remaining-requests": "0"}, used_tokens=50)  # no raise
        router.failed(router.acquire([m], length=1, tokens=100), UpstreamError("boom"))
    assert router.settle_failures == 2
    lines = records(caplog)
    assert len(lines) == 2
    assert all("sk-secret" not in r.getMessage() and "\n" not in r.getMessage() for r in lines)
    router.acquire([m], length=1, tokens=100)  # reservations still work


@pytest.mark.redis
def test_settle_when_redis_fails(redis_url: str, redis_namespace: str, clock: FakeClock, caplog) -> None:
    """A real Redis error between the reservation and the settle (here the log key was replaced by
    a value of the wrong type) costs the settle, never the answer."""
    import redis

    from app.routing import RedisStorage

    m = model(tokens_per_minute=1000)
    router = Router(
        [m], RedisStorage.from_url(redis_url, redis_namespace), RoutingConfig(), BreakerConfig(), clock=clock
    )
    res = router.acquire([m], length=1, tokens=100)
    client = redis.Redis.from_url(redis_url)
    (log_key,) = [k for k in client.scan_iter(match=f"*{redis_namespace}*:log:*")]
    client.delete(log_key)
    client.set(log_key, "not a sorted set")
    with caplog.at_level(logging.WARNING, logger="ai_proxy.routing"):
        router.succeeded(res, {}, used_tokens=50)
    client.close()
    assert router.settle_failures == 1
    assert len(records(caplog)) == 1
