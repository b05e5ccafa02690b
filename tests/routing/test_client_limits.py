"""A client's windows and a model's are reserved in one atomic step: neither is spent when the
other refuses (memory and Redis, under 200 racing threads)."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import redis

from app.config import BreakerConfig, RoutingConfig
from app.errors import ClientQuotaExceeded, RateLimited
from app.routing import ClientPlan, RedisStorage, Router, UsageRow
from app.routing.limits import client_spans
from tests.routing.conftest import WITHOUT_TLS, FakeClock, model


def client(rpm: int = 0, rpd: int = 0, tpm: int = 0, name: str = "alice") -> ClientPlan:
    return ClientPlan(name, client_spans(rpm, 0, rpd, tpm, 0))


def race(router: Router, candidates, plan: ClientPlan, threads: int = 200):
    start = threading.Barrier(threads)
    admitted, by_client, by_model = [], [], []

    def one() -> None:
        start.wait()
        try:
            admitted.append(router.acquire(candidates, length=1, tokens=1, client=plan))
        except ClientQuotaExceeded as exc:
            by_client.append(exc)
        except RateLimited as exc:
            by_model.append(exc)

    pool = [threading.Thread(target=one) for _ in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(admitted) + len(by_client) + len(by_model) == threads
    return admitted, by_client, by_model


def model_used(router: Router, name: str) -> int:
    entry = next(e for e in router.snapshot() if e["name"] == name)
    return next(w["used"] for w in entry["windows"] if w["window"] == "requests_per_minute")


@WITHOUT_TLS
def test_200_threads_admit_exactly_the_clients_limit_and_spend_no_model_quota(make_storage, clock) -> None:
    m = model(requests_per_minute=1000)
    router = Router([m], make_storage(), RoutingConfig(), BreakerConfig(), clock=clock)
    plan = client(rpm=37)
    admitted, by_client, by_model = race(router, [m], plan)
    assert len(admitted) == 37
    assert len(by_client) == 163 and not by_model
    assert model_used(router, m.name) == 37  # the refused requests took nothing from the model
    assert all(r.client is not None and r.client.plan is plan for r in admitted)
    refusal = by_client[0]
    assert refusal.status == 429 and refusal.code == "client_quota_exceeded"
    assert "requests_per_minute (37)" in refusal.message
    assert refusal.retry_after is not None and 1 <= refusal.retry_after <= 60


@WITHOUT_TLS
def test_a_refusing_model_charges_the_client_nothing(make_storage, clock) -> None:
    small = model("groq/small", requests_per_minute=5)
    free = model("groq/free")
    router = Router([small, free], make_storage(), RoutingConfig(), BreakerConfig(), clock=clock)
    plan = client(rpm=8)
    admitted, by_client, by_model = race(router, [small], plan)
    assert len(admitted) == 5 and len(by_model) == 195 and not by_client
    # The client was charged only the five admitted: three more fit, then its own window refuses.
    for _ in range(3):
        router.acquire([free], length=1, tokens=1, client=plan)
    with pytest.raises(ClientQuotaExceeded):
        router.acquire([free], length=1, tokens=1, client=plan)
    assert model_used(router, small.name) == 5


def test_clients_have_separate_windows_and_they_roll(make_storage, clock: FakeClock) -> None:
    m = model()
    router = Router([m], make_storage(), RoutingConfig(), BreakerConfig(), clock=clock)
    alice, bob = client(rpm=2), client(rpm=1, name="bob")
    for _ in range(2):
        router.acquire([m], length=1, tokens=1, client=alice)
    router.acquire([m], length=1, tokens=1, client=bob)
    with pytest.raises(ClientQuotaExceeded):
        router.acquire([m], length=1, tokens=1, client=alice)
    with pytest.raises(ClientQuotaExceeded):
        router.acquire([m], length=1, tokens=1, client=bob)
    clock.advance(61)
    router.acquire([m], length=1, tokens=1, client=alice)


def test_a_fallback_counts_once_for_the_client(make_storage, clock) -> None:
    a, b = model("groq/a"), model("groq/b")
    router = Router([a, b], make_storage(), RoutingConfig(), BreakerConfig(), clock=clock)
    plan = client(rpm=1)
    first = router.acquire([a, b], length=1, tokens=1, client=plan)
    second = router.acquire(
        [a, b], length=1, tokens=1, client=plan, charged=first.client, exclude=[first.model.name]
    )
    assert second.client == first.client
    with pytest.raises(ClientQuotaExceeded):
        router.acquire([a, b], length=1, tokens=1, client=plan)


def test_token_windows_settle_to_real_usage(make_storage, clock) -> None:
    m = model()
    router = Router([m], make_storage(), RoutingConfig(), BreakerConfig(), clock=clock)
    plan = client(tpm=1000)
    res = router.acquire([m], length=1, tokens=900, client=plan)
    with pytest.raises(ClientQuotaExceeded, match="tokens_per_minute"):
        router.acquire([m], length=1, tokens=200, client=plan)
    router.succeeded(res, {}, used_tokens=100)
    router.acquire([m], length=1, tokens=800, client=plan)  # 100 + 800 fit in 1000
    with pytest.raises(ClientQuotaExceeded):
        router.acquire([m], length=1, tokens=200, client=plan)


def test_a_refund_returns_the_tokens_of_a_failed_request(make_storage, clock) -> None:
    m = model()
    router = Router([m], make_storage(), RoutingConfig(), BreakerConfig(), clock=clock)
    plan = client(tpm=1000)
    res = router.acquire([m], length=1, tokens=900, client=plan)
    assert res.client is not None
    router.refund_client(res.client)
    router.acquire([m], length=1, tokens=900, client=plan)


def test_client_tokens_settle_even_when_the_model_counts_none(make_storage, clock) -> None:
    m = model(requests_per_minute=100)  # no token window of its own
    router = Router([m], make_storage(), RoutingConfig(), BreakerConfig(), clock=clock)
    plan = client(tpm=500)
    res = router.acquire([m], length=1, tokens=400, client=plan)
    router.succeeded(res, {}, used_tokens=10)
    router.acquire([m], length=1, tokens=480, client=plan)


def test_usage_rows_add_up_per_day_client_and_model(make_storage) -> None:
    storage = make_storage()
    storage.record_usage(UsageRow("2026-11-28", "alice", "groq/a", 1, 10, 5), keep_days=35)
    storage.record_usage(UsageRow("2026-11-29", "alice", "groq/a", 1, 7, 3), keep_days=35)
    storage.record_usage(UsageRow("2026-11-29", "alice", "groq/a", 1, 2, 1), keep_days=35)
    storage.record_usage(UsageRow("2026-11-29", "bob", "groq/b", 1, 4, 4), keep_days=35)
    rows = sorted(make_storage().usage(["2026-11-29", "2026-11-28"]))  # as another worker sees it
    assert rows == [
        UsageRow("2026-11-28", "alice", "groq/a", 1, 10, 5),
        UsageRow("2026-11-29", "alice", "groq/a", 2, 9, 4),
        UsageRow("2026-11-29", "bob", "groq/b", 1, 4, 4),
    ]
    assert make_storage().usage(["2026-11-27"]) == []


def tokens_used(router: Router, name: str) -> int:
    entry = next(e for e in router.snapshot() if e["name"] == name)
    return next(w["used"] for w in entry["windows"] if w["window"] == "tokens_per_minute")


def test_an_answer_settles_model_and_client_and_records_usage_in_one_storage_step(
    make_storage, clock
) -> None:
    m = model(tokens_per_minute=1000)
    storage = make_storage()
    steps: list[tuple] = []
    settle = storage.settle
    storage.settle = lambda *args: (steps.append(args), settle(*args))[1]  # type: ignore[method-assign]
    router = Router([m], storage, RoutingConfig(), BreakerConfig(), clock=clock)
    plan = client(tpm=500)
    res = router.acquire([m], length=1, tokens=400, client=plan)
    usage = {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    router.succeeded(res, {}, used_tokens=10, client="alice", usage=usage)
    assert len(steps) == 1
    assert tokens_used(router, m.name) == 10  # the model's window: settled
    router.acquire([m], length=1, tokens=480, client=plan)  # the client's: 10 + 480 fit in 500
    day = time.strftime("%Y-%m-%d", time.gmtime(clock()))
    assert make_storage().usage([day]) == [UsageRow(day, "alice", m.name, 1, 4, 6)]


def test_an_answer_with_nothing_to_settle_still_records_usage(make_storage, clock) -> None:
    m = model(requests_per_minute=100)
    router = Router([m], make_storage(), RoutingConfig(), BreakerConfig(), clock=clock)
    router.succeeded(router.acquire([m], length=1, tokens=5), {}, used_tokens=None, client="bob")
    day = time.strftime("%Y-%m-%d", time.gmtime(clock()))
    assert make_storage().usage([day]) == [UsageRow(day, "bob", m.name, 1, 0, 0)]


@pytest.mark.redis
def test_an_answered_request_is_two_redis_round_trips(redis_url: str, redis_namespace: str, clock) -> None:
    """The reservation, then one settle carrying the model's and the client's tokens and the usage
    row (MONITOR: commands sent by clients; those a script runs are listed as `lua`)."""
    m = model(tokens_per_minute=1000)
    router = Router(
        [m], RedisStorage.from_url(redis_url, redis_namespace), RoutingConfig(), BreakerConfig(), clock=clock
    )
    plan = client(tpm=5000)
    usage = {"prompt_tokens": 4, "completion_tokens": 6}

    def answered() -> None:
        router.succeeded(
            router.acquire([m], length=1, tokens=40, client=plan), {}, 10, client="alice", usage=usage
        )

    answered()  # the scripts are loaded
    watcher = redis.Redis.from_url(redis_url)
    marker = f"{redis_namespace}:done"
    sent = []
    with watcher.monitor() as monitor:
        answered()
        watcher.echo(marker)
        while (command := monitor.next_command())["command"] != f"ECHO {marker}":
            if command["client_type"] != "lua" and redis_namespace in command["command"]:
                sent.append(command["command"].split()[0])
    watcher.close()
    assert sent == ["EVALSHA", "EVALSHA"]
