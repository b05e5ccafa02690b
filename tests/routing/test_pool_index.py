"""The storages keep each model's slots indexed by last use and walk them best first (issue 11's
20 x 50 pools). Whatever the index does, every pick must be the one that ranking every slot would
give: priority, then last use, then position, among the slots that can serve. The reference here
ranks them all from router.snapshot()."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import redis

from app.config import BreakerConfig, ModelConfig, RoutingConfig
from app.errors import RateLimited, ServiceUnavailable, UpstreamError
from app.routing import Cooldown, RedisStorage, Reservation, Router
from tests.routing.conftest import FakeClock, model

KEYS = tuple(f"sk-index-key-{n:02d}-{'x' * 8}" for n in range(8))
ROUTING = RoutingConfig(cooldown_seconds=15, credit_retry_seconds=30)
NO_BREAKER = BreakerConfig(fail_max=10_000)  # faults rest the model; no breaker to model here


def pooled(name: str, keys: tuple[str, ...], **fields) -> ModelConfig:
    return replace(model(name, **fields), token=keys[0], keys=keys)


def expected(
    router: Router, candidates: list[ModelConfig], exclude: set[str], now: float
) -> tuple[str, str] | None:
    """The slot that ranking every candidate slot gives, from the router's own snapshot."""
    views = {view["name"]: view for view in router.snapshot()}
    ranked = []
    number = 0
    for candidate in candidates:
        view = views[candidate.name]
        model_out = view["cooldown_until"] is not None and view["cooldown_until"] > now
        for key in view["keys"]:
            free = key["cooldown"] is None and all(w["remaining"] > 0 for w in key["windows"])
            tried = candidate.name in exclude or f"{candidate.name}{key['key']}" in exclude
            if free and not tried and not model_out:
                ranked.append((view["priority"], key["last_used"] or 0.0, number, candidate.name, key["key"]))
            number += 1
    return min(ranked)[3:] if ranked else None


def acquire_and_compare(
    router: Router, candidates: list[ModelConfig], exclude: set[str], now: float
) -> Reservation | None:
    """Acquire and check the slot against the reference; None when both refuse."""
    want = expected(router, candidates, exclude, now)
    try:
        res = router.acquire(candidates, length=1, tokens=1, exclude=exclude)
    except (RateLimited, ServiceUnavailable):
        assert want is None
        return None
    assert (res.model.name, res.key_label) == want
    return res


def test_every_pick_is_the_one_ranking_every_slot_gives(make_storage, clock: FakeClock) -> None:
    """Random reservations, rests (a slot's, a whole key's, a model's) and clock steps, many of them
    zero so that last uses tie; checked against the reference at every step."""
    a = pooled("groq/a", KEYS[:4], priority=1, model_size="small", requests_per_minute=2)
    b = pooled("groq/b", (KEYS[2], KEYS[4], KEYS[5]), priority=1, model_size="small", requests_per_minute=3)
    c = pooled("groq/c", KEYS[6:], priority=2, model_size="small", requests_per_minute=5)
    router = Router([a, b, c], make_storage(), ROUTING, NO_BREAKER, clock=clock)
    group = router.resolve("SMALL", "chat")
    rng = random.Random(11)
    taken: list[str] = []
    for _ in range(250):
        clock.advance(rng.choice((0.0, 0.0, 0.0, 1e-6, 0.25, 3.0, 20.0)))
        candidates = rng.choice((group, group, [a], [b], [c], [b, a]))
        exclude = set(rng.sample(taken[-4:], min(len(taken), rng.randint(0, 2))))
        if rng.random() < 0.1:
            exclude.add(rng.choice(candidates).name)
        res = acquire_and_compare(router, candidates, exclude, clock.now)
        if res is None:
            continue
        taken.append(res.slot)
        roll = rng.random()
        if roll < 0.25:
            router.failed(res, RateLimited("429", retry_after=rng.choice((0.5, 2, 8, 40))))
        elif roll < 0.28:
            router.failed(res, _with(UpstreamError("402"), Cooldown("credit", None, "out of credit")))
        elif roll < 0.31:
            router.failed(res, UpstreamError("upstream error 500"))  # a fault: the model rests
    assert len(taken) > 100  # most steps reserved: the walk was exercised, not only refusals
    assert len(taken) < 250  # and some were refused: so were the refusals


def test_a_resting_slot_is_back_in_its_place_the_moment_its_rest_ends(make_storage, clock: FakeClock) -> None:
    """A walk that finds the least recently used slot resting leaves it out until its rest ends
    (a slot's own rest is never shortened); then it is the least recently used again."""
    m = pooled("groq/a", KEYS[:3], requests_per_minute=100)
    router = Router([m], make_storage(), ROUTING, NO_BREAKER, clock=clock)
    first = router.acquire([m], length=1, tokens=1)
    router.failed(first, RateLimited("429", retry_after=10))
    rest_end = clock.now + 10
    labels = []
    for _ in range(4):  # #1 rests: the others serve, and the walk passes #1 (the oldest) each time
        clock.advance(1)
        labels.append(acquire_and_compare(router, [m], set(), clock.now).key_label)
    assert labels == ["#2", "#3", "#2", "#3"]
    clock.now = rest_end - 1e-6
    assert acquire_and_compare(router, [m], set(), clock.now).key_label == "#2"
    clock.now = rest_end
    assert acquire_and_compare(router, [m], set(), clock.now).key_label == "#1"


def _with(error: UpstreamError, cooldown: Cooldown) -> UpstreamError:
    error.cooldown = cooldown
    return error


def test_a_changed_key_list_ranks_by_the_last_uses_it_finds(make_storage, clock: FakeClock) -> None:
    """Two configs of one model over one storage (a reload, or a rolling deploy): each pick follows
    the last uses either one left, ties by position in the config that asks."""
    old = pooled("groq/a", KEYS[:3], requests_per_minute=3)
    new = pooled("groq/a", (KEYS[2], KEYS[3], KEYS[0]), requests_per_minute=3)
    one = Router([old], make_storage(), ROUTING, NO_BREAKER, clock=clock)
    two = Router([new], make_storage(), ROUTING, NO_BREAKER, clock=clock)
    order = []
    for step in range(16):
        router, m = (one, old) if step % 3 else (two, new)
        res = acquire_and_compare(router, [m], set(), clock.now)
        order.append(res and res.key_label)
        clock.advance(0.0 if step % 2 else 1.0)
    assert order[:4] == ["#1", "#1", "#2", "#2"]  # new: K2; old: K0; old: K1; new: K3
    assert None in order  # the windows filled up: refusals were compared too


@pytest.mark.redis
def test_a_lost_redis_index_is_built_again_from_the_last_uses(
    redis_url: str, redis_namespace: str, clock: FakeClock
) -> None:
    """The index expires with the model's last uses, may be evicted, or be built by another config:
    the script then asks for the pool's ids and builds it again, in the same reservation."""
    m = pooled("groq/a", KEYS[:4], requests_per_minute=100)
    router = Router([m], RedisStorage.from_url(redis_url, redis_namespace), ROUTING, NO_BREAKER, clock=clock)
    for _ in range(3):
        acquire_and_compare(router, [m], set(), clock.now)
        clock.advance(1)
    client = redis.Redis.from_url(redis_url)
    try:
        indexes = list(client.scan_iter(match=f"{redis_namespace}:{{quota}}:lru:*"))
        assert len(indexes) == 1
        client.delete(*indexes)
        assert router.acquire([m], length=1, tokens=1).key_label == "#4"  # never used
        clock.advance(1)
        assert router.acquire([m], length=1, tokens=1).key_label == "#1"  # the oldest use
        assert client.zcard(indexes[0]) == len(m.keys) + 1  # every slot and the pool's marker
    finally:
        client.close()
