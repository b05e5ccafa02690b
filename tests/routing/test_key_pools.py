"""Key pools (issue 11): every (model, key) is a slot with its own windows, rest and last use, and
cooldown classes rest a slot or a key value everywhere. Memory and Redis storage alike, with an
injected clock."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from app.config import BreakerConfig, ModelConfig, RoutingConfig
from app.errors import RateLimited, ServiceUnavailable, UpstreamAuthError, UpstreamBadRequest, UpstreamError
from app.routing import Cooldown, Router
from tests.routing.conftest import WITHOUT_TLS, FakeClock, model

KEYS = ("sk-pool-key-aaaa1111", "sk-pool-key-bbbb2222", "sk-pool-key-cccc3333")
ROUTING = RoutingConfig(
    cooldown_seconds=30, unavailable_seconds=600, auth_retry_seconds=100, credit_retry_seconds=1000
)


def pooled(name: str = "groq/a", keys: tuple[str, ...] = KEYS, **fields) -> ModelConfig:
    return replace(model(name, **fields), token=keys[0], keys=keys)


@pytest.fixture
def make_pool_router(make_storage, clock: FakeClock):
    def make(models: list[ModelConfig], **breaker) -> Router:
        return Router(models, make_storage(), ROUTING, BreakerConfig(**breaker), clock=clock)

    return make


def take(router: Router, candidates: list[ModelConfig], clock: FakeClock | None = None) -> tuple[str, str]:
    """Acquire once; with a clock, step it a millisecond so that last uses differ."""
    res = router.acquire(candidates, length=1, tokens=1)
    if clock is not None:
        clock.advance(0.001)
    return res.model.name, res.key_label


def entry(router: Router, name: str) -> dict:
    return next(m for m in router.snapshot() if m["name"] == name)


def key_view(router: Router, name: str, label: str) -> dict:
    return next(k for k in entry(router, name)["keys"] if k["key"] == label)


def test_each_key_has_its_own_windows_least_recently_used_first(make_pool_router, clock) -> None:
    m = pooled(requests_per_minute=2)
    router = make_pool_router([m])
    labels = [take(router, [m])[1] for _ in range(6)]
    assert labels == ["#1", "#2", "#3", "#1", "#2", "#3"]
    with pytest.raises(RateLimited) as refused:
        router.acquire([m], length=1, tokens=1)
    for label in ("#1", "#2", "#3"):
        assert f"groq/a{label}: requests_per_minute spent" in refused.value.message
    assert refused.value.retry_after == 60.0
    view = entry(router, m.name)
    assert [k["windows"][0]["used"] for k in view["keys"]] == [2, 2, 2]
    assert view["windows"][0] == {
        "window": "requests_per_minute",
        "limit": 6,
        "used": 6,
        "remaining": 0,
        "reset_seconds": 60.0,
    }
    assert view["limits"] == {"requests_per_minute": 2}
    clock.advance(60)
    assert take(router, [m]) == ("groq/a", "#1")


def test_reservation_carries_the_key_value_and_label(make_pool_router) -> None:
    m = pooled()
    router = make_pool_router([m])
    got = [router.acquire([m], length=1, tokens=1) for _ in range(3)]
    assert [(r.key_label, r.key, r.model.token, r.slot) for r in got] == [
        ("#1", KEYS[0], KEYS[0], "groq/a#1"),
        ("#2", KEYS[1], KEYS[1], "groq/a#2"),
        ("#3", KEYS[2], KEYS[2], "groq/a#3"),
    ]
    assert all(r.model.name == m.name for r in got)
    assert KEYS[0] not in repr(got)


def test_a_single_token_is_a_pool_of_one(make_pool_router) -> None:
    m = model(requests_per_minute=1)
    router = make_pool_router([m])
    res = router.acquire([m], length=1, tokens=1)
    assert (res.model, res.key_label, res.key) == (m, "#1", m.token)
    assert [k["key"] for k in entry(router, m.name)["keys"]] == ["#1"]


def test_exclude_a_slot_moves_to_the_next_key_of_the_same_model(make_pool_router) -> None:
    m = pooled()
    router = make_pool_router([m])
    first = router.acquire([m], length=1, tokens=1)
    second = router.acquire([m], length=1, tokens=1, exclude=[first.slot])
    third = router.acquire([m], length=1, tokens=1, exclude=[first.slot, second.slot])
    assert [first.key_label, second.key_label, third.key_label] == ["#1", "#2", "#3"]
    with pytest.raises(ServiceUnavailable, match="already tried"):
        router.acquire([m], length=1, tokens=1, exclude=[m.name])


def test_groups_rank_every_members_slots_by_priority_then_last_use(make_pool_router) -> None:
    a = pooled("groq/a", KEYS[:2], priority=1, model_size="small", requests_per_minute=1)
    b = pooled("groq/b", KEYS[2:], priority=2, model_size="small", requests_per_minute=5)
    c = model("groq/c", priority=1, model_size="small", requests_per_minute=1)
    router = make_pool_router([a, b, c])
    group = router.resolve("SMALL", "chat")
    order = [take(router, group) for _ in range(5)]
    assert order[:3] == [("groq/a", "#1"), ("groq/a", "#2"), ("groq/c", "#1")]  # priority 1, in turn
    assert order[3:] == [("groq/b", "#1"), ("groq/b", "#1")]


def test_rate_rests_only_that_slot_until_the_named_reset(make_pool_router, clock) -> None:
    m = pooled()
    router = make_pool_router([m])
    res = router.acquire([m], length=1, tokens=1)
    router.failed(res, RateLimited("429", retry_after=10))
    assert key_view(router, m.name, "#1")["cooldown"] == {
        "class": "rate",
        "until": clock.now + 10,
        "reason": "upstream 429",
    }
    assert [take(router, [m], clock)[1] for _ in range(4)] == ["#2", "#3", "#2", "#3"]
    clock.advance(10 - 0.004)
    assert take(router, [m])[1] == "#1"
    # no reset named: routing.cooldown_seconds
    res = router.acquire([m], length=1, tokens=1)
    router.failed(res, _with(UpstreamError("x"), Cooldown("rate", None, "minute quota")))
    assert key_view(router, m.name, res.key_label)["cooldown"]["until"] == pytest.approx(clock.now + 30)


def test_a_spent_upstream_quota_header_rests_the_slot(make_pool_router, clock) -> None:
    m = pooled()
    router = make_pool_router([m])
    res = router.acquire([m], length=1, tokens=1)
    router.succeeded(res, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "7s"}, 5)
    rest = key_view(router, m.name, "#1")["cooldown"]
    assert (rest["class"], rest["until"]) == ("rate", clock.now + 7)
    assert key_view(router, m.name, "#2")["cooldown"] is None


def _with(error, cooldown: Cooldown):
    error.cooldown = cooldown
    return error


def test_daily_rests_the_slot_until_the_day_resets(make_pool_router, clock) -> None:
    tz = ZoneInfo("America/Los_Angeles")
    clock.now = datetime(2026, 3, 10, 23, 30, tzinfo=tz).timestamp()
    m = pooled(day_resets_at="00:00", timezone="America/Los_Angeles")
    n = pooled("groq/n", KEYS[:1])
    router = make_pool_router([m, n])
    res = router.acquire([m], length=1, tokens=1)
    router.failed(res, _with(UpstreamError("x"), Cooldown("daily", None, "per-day quota spent")))
    assert key_view(router, m.name, "#1")["cooldown"]["until"] == clock.now + 1800
    res = router.acquire([n], length=1, tokens=1)  # the same key still serves another model
    router.failed(res, _with(UpstreamError("x"), Cooldown("daily", None, "spent")))
    assert key_view(router, n.name, "#1")["cooldown"]["until"] == clock.now + 86400  # no day set
    res = router.acquire([m], length=1, tokens=1)
    router.failed(res, _with(UpstreamError("x"), Cooldown("daily", 120.0, "spent")))  # a named reset
    assert key_view(router, m.name, res.key_label)["cooldown"]["until"] == clock.now + 120
    clock.advance(1800)
    assert key_view(router, m.name, "#1")["cooldown"] is None
    assert {take(router, [m], clock)[1] for _ in range(3)} == {"#1", "#2", "#3"}


def test_unavailable_rests_one_slot_for_unavailable_seconds(make_pool_router, clock) -> None:
    m = pooled()
    other = pooled("groq/other", KEYS[:1])
    router = make_pool_router([m, other])
    res = router.acquire([m], length=1, tokens=1)
    router.failed(res, _with(UpstreamError("x"), Cooldown("unavailable", None, "limit 0 for this model")))
    cooldown = key_view(router, m.name, "#1")["cooldown"]
    assert cooldown == {"class": "unavailable", "until": clock.now + 600, "reason": "limit 0 for this model"}
    assert take(router, [other]) == ("groq/other", "#1")  # the key serves the models it may use
    assert {take(router, [m])[1] for _ in range(4)} == {"#2", "#3"}
    clock.advance(600)
    assert "#1" in {take(router, [m])[1] for _ in range(3)}


def test_credit_rests_the_key_value_in_every_model(make_pool_router, clock) -> None:
    m = pooled()
    other = pooled("groq/other", (KEYS[1], KEYS[0]))  # the same key value, another position
    router = make_pool_router([m, other])
    res = router.acquire([m], length=1, tokens=1)
    router.failed(res, _with(UpstreamError("402"), Cooldown("credit", None, "out of credit")))
    assert key_view(router, other.name, "#2")["cooldown"]["class"] == "credit"
    assert {take(router, [other])[1] for _ in range(3)} == {"#1"}
    clock.advance(1000)
    assert key_view(router, other.name, "#2")["cooldown"] is None
    res = router.acquire([other], length=1, tokens=1)
    assert (res.key_label, res.key_trial) == ("#2", False)  # back without a trial


def test_auth_rests_the_key_everywhere_then_one_trial_decides(make_pool_router, clock) -> None:
    m = pooled()
    other = pooled("groq/other", (KEYS[0],))
    router = make_pool_router([m, other])
    res = router.acquire([m], length=1, tokens=1)
    router.failed(res, UpstreamAuthError("The proxy's credentials were rejected"))  # 401: auth
    with pytest.raises(ServiceUnavailable, match=r"groq/other: cooling down 1m40s after .* \(auth\)"):
        router.acquire([other], length=1, tokens=1)
    assert entry(router, m.name)["breaker"] == "closed"  # the key's fault, not the model's
    clock.advance(100)
    trial = router.acquire([other], length=1, tokens=1)
    assert trial.key_trial
    # while the trial is in flight, the key waits; the pool's other keys serve
    with pytest.raises(ServiceUnavailable, match="trial request is in flight"):
        router.acquire([other], length=1, tokens=1)
    assert {take(router, [m])[1] for _ in range(2)} == {"#2", "#3"}
    router.failed(trial, UpstreamAuthError("still rejected"))  # failure: rested again
    assert key_view(router, m.name, "#1")["cooldown"]["until"] == clock.now + 100
    with pytest.raises(ServiceUnavailable):
        router.acquire([other], length=1, tokens=1)
    clock.advance(100)
    trial = router.acquire([other], length=1, tokens=1)
    assert trial.key_trial
    router.succeeded(trial, {}, 10)  # success: back in the pool, no restart
    assert key_view(router, m.name, "#1")["cooldown"] is None
    assert [router.acquire([other], length=1, tokens=1).key_trial for _ in range(2)] == [False, False]


def test_a_trial_answered_by_another_failure_still_proves_the_key(make_pool_router, clock) -> None:
    m = pooled("groq/a", KEYS[:1])
    router = make_pool_router([m])
    router.failed(router.acquire([m], length=1, tokens=1), UpstreamAuthError("rejected"))
    clock.advance(100)
    trial = router.acquire([m], length=1, tokens=1)
    router.failed(trial, UpstreamBadRequest("unknown parameter"))  # the upstream took the key
    assert key_view(router, m.name, "#1")["cooldown"] is None
    assert not router.acquire([m], length=1, tokens=1).key_trial


def test_every_key_out_of_use_is_a_503_and_quota_a_429(make_pool_router, clock) -> None:
    m = pooled(requests_per_minute=1)
    router = make_pool_router([m])
    for _ in KEYS:
        router.failed(router.acquire([m], length=1, tokens=1), UpstreamAuthError("rejected"))
    with pytest.raises(ServiceUnavailable) as refused:
        router.acquire([m], length=1, tokens=1)
    assert refused.value.retry_after == 100.0
    view = entry(router, m.name)
    assert view["cooldown_until"] == clock.now + 100  # every key rests, so the model does
    clock.advance(100)
    for _ in KEYS:
        router.succeeded(router.acquire([m], length=1, tokens=1), {}, 1)
    with pytest.raises(RateLimited):
        router.acquire([m], length=1, tokens=1)


def test_no_part_of_a_key_appears_in_quota_or_refusals(make_pool_router, clock) -> None:
    m = pooled(requests_per_minute=1)
    router = make_pool_router([m])
    router.failed(router.acquire([m], length=1, tokens=1), UpstreamAuthError("rejected"))
    router.failed(router.acquire([m], length=1, tokens=1), RateLimited("429", retry_after=5))
    router.acquire([m], length=1, tokens=1)
    with pytest.raises(RateLimited) as refused:
        router.acquire([m], length=1, tokens=1)
    seen = json.dumps(router.snapshot()) + refused.value.message + repr(refused.value.__dict__)
    for key in KEYS:
        for part in (key, key[-8:], key[-4:]):
            assert part not in seen


def test_a_cooldown_class_must_be_known() -> None:
    with pytest.raises(ValueError, match="unknown cooldown class"):
        Cooldown("minute")


def admit(router: Router, m: ModelConfig, threads: int) -> tuple[Counter, int]:
    """Fire `threads` acquires at once: (labels admitted, number refused)."""
    start = threading.Barrier(threads)
    admitted: list[str] = []
    refused: list[RateLimited] = []

    def one() -> None:
        start.wait()
        try:
            admitted.append(router.acquire([m], length=1, tokens=1).key_label)
        except RateLimited as exc:
            refused.append(exc)

    pool = [threading.Thread(target=one) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return Counter(admitted), len(refused)


@WITHOUT_TLS
def test_three_keys_of_five_admit_exactly_fifteen(make_storage, clock: FakeClock) -> None:
    m = pooled(requests_per_minute=5)
    router = Router([m], make_storage(), ROUTING, BreakerConfig(), clock=clock)
    for _ in range(3):  # a few rounds, as a race may hide in any one of them
        assert admit(router, m, 60) == ({"#1": 5, "#2": 5, "#3": 5}, 45)
        clock.advance(60)


@pytest.mark.redis
def test_redis_keys_of_one_script_share_a_hash_slot(redis_url: str, redis_namespace: str) -> None:
    import redis

    from app.routing import RedisStorage

    m = pooled(requests_per_minute=3)
    router = Router([m], RedisStorage.from_url(redis_url, redis_namespace), ROUTING, BreakerConfig())
    router.failed(router.acquire([m], length=1, tokens=1), UpstreamAuthError("rejected"))
    router.acquire([m], length=1, tokens=1)
    client = redis.Redis.from_url(redis_url)
    try:
        names = [k.decode() for k in client.scan_iter(match=f"{redis_namespace}:*")]
    finally:
        client.close()
    quota = [k for k in names if ":breaker:" not in k]
    assert {k.split(":")[2] for k in quota} >= {"model", "used", "lru", "log", "win", "key"}
    assert all(k.startswith(f"{redis_namespace}:{{quota}}:") for k in quota)
    assert not any(key in name for name in names for key in KEYS)


def test_workers_share_slots_and_key_rests(make_pool_router, clock) -> None:
    """Two routers over one storage (two workers, or two replicas on one Redis)."""
    m = pooled(requests_per_minute=1)
    other = pooled("groq/other", (KEYS[2],))
    one, two = make_pool_router([m, other]), make_pool_router([m, other])
    assert take(one, [m], clock)[1] == "#1"
    assert take(two, [m], clock)[1] == "#2"  # #1's window is spent for every worker
    res = one.acquire([m], length=1, tokens=1)
    one.failed(res, _with(UpstreamError("402"), Cooldown("credit", None, "out of credit")))
    with pytest.raises(ServiceUnavailable, match=r"groq/other: cooling down .* \(credit\)"):
        two.acquire([other], length=1, tokens=1)


def test_when_the_least_recently_used_key_cannot_serve_the_next_does(make_pool_router, clock) -> None:
    m = pooled(requests_per_minute=2)
    router = make_pool_router([m])
    first = router.acquire([m], length=1, tokens=1)
    clock.advance(1)
    assert [take(router, [m], clock)[1] for _ in range(2)] == ["#2", "#3"]
    router.succeeded(first, {"x-ratelimit-remaining-requests": "0"}, 1)  # #1, the oldest, rests
    assert [take(router, [m], clock)[1] for _ in range(2)] == ["#2", "#3"]
    with pytest.raises(RateLimited) as refused:
        router.acquire([m], length=1, tokens=1)
    reasons = refused.value.message.split(": ", 1)[1].split("; ")
    assert [r.split(":")[0] for r in reasons] == ["groq/a#1", "groq/a#2", "groq/a#3"]
    assert "cooling down" in reasons[0] and "requests_per_minute spent" in reasons[1]
