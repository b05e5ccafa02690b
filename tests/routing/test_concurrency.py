"""Races: many threads, and many processes on one Redis, never admit more than the limit."""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
from collections import Counter

import pytest
import redis

from app.config import BreakerConfig, RoutingConfig
from app.errors import RateLimited
from app.routing import RedisStorage, Router
from app.routing.redis_storage import MAX_CONNECTIONS
from tests.routing._race import race
from tests.routing.conftest import WITHOUT_TLS, FakeClock, model


def hammer(router: Router, candidates, threads: int) -> list[str]:
    start = threading.Barrier(threads)
    admitted: list[str] = []
    refused: list[RateLimited] = []

    def one() -> None:
        start.wait()
        try:
            admitted.append(router.acquire(candidates, length=1, tokens=1).model.name)
        except RateLimited as exc:
            refused.append(exc)

    pool = [threading.Thread(target=one) for _ in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to expose any race
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(admitted) + len(refused) == threads
    return admitted


@WITHOUT_TLS
def test_200_threads_admit_exactly_the_limit(make_storage, clock: FakeClock) -> None:
    m = model(requests_per_minute=10)
    router = Router([m], make_storage(), RoutingConfig(), BreakerConfig(), clock=clock)
    for _ in range(5):  # a few rounds, as a race may hide in any one of them
        assert len(hammer(router, [m], 200)) == 10
        clock.advance(60)


@WITHOUT_TLS
def test_threads_spread_over_a_group_without_overbooking(make_storage) -> None:
    a = model("groq/a", requests_per_minute=5, tokens_per_minute=50, model_size="small")
    b = model("groq/b", requests_per_minute=7, requests_per_day=6, model_size="small")
    router = Router([a, b], make_storage(), RoutingConfig(), BreakerConfig(), clock=time.time)
    assert Counter(hammer(router, [a, b], 200)) == {"groq/a": 5, "groq/b": 6}


@pytest.mark.redis
def test_processes_share_one_quota(redis_url: str, redis_namespace: str) -> None:
    m = model(requests_per_minute=10)
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(4), context.Queue()
    workers = [
        context.Process(target=race, args=(redis_url, redis_namespace, m, 50, ready, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    admitted = [rid for _ in workers for rid in results.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=10)
    assert len(admitted) == len(set(admitted)) == 10
    router = Router([m], RedisStorage.from_url(redis_url, redis_namespace), RoutingConfig(), BreakerConfig())
    assert router.snapshot()[0]["windows"][0]["used"] == 10


def _acquire_from_threads(router: Router, m, threads: int, results) -> None:
    results.put(len(hammer(router, [m], threads)))


def admitted_in_forked_workers(router: Router, m, workers: int = 3, threads: int = 20) -> int:
    """Fork `workers` processes from `router`, as gunicorn's preload_app does, each hammering it
    from `threads` threads; how many they admitted in all."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    forked = [
        context.Process(target=_acquire_from_threads, args=(router, m, threads, results))
        for _ in range(workers)
    ]
    for worker in forked:
        worker.start()
    admitted = sum(results.get(timeout=60) for _ in forked)
    for worker in forked:
        worker.join(timeout=10)
    return admitted


@pytest.mark.redis
def test_workers_forked_from_a_preloaded_router_count_every_request(
    redis_url: str, redis_namespace: str
) -> None:
    """gunicorn's preload_app builds the router once and forks it into every worker."""
    m = model(requests_per_minute=1000)
    router = Router([m], RedisStorage.from_url(redis_url, redis_namespace), RoutingConfig(), BreakerConfig())
    admitted = admitted_in_forked_workers(router, m)
    assert admitted == 60
    assert router.snapshot()[0]["windows"][0]["used"] == 60


@pytest.mark.redis
def test_many_threads_share_a_bounded_set_of_redis_connections(redis_url: str, redis_namespace: str) -> None:
    """A worker runs 1,500 threads: their reservations share at most MAX_CONNECTIONS connections
    (Redis and hosted plans limit clients), even while reloading lost scripts, and every one of
    them is still counted."""
    m = model(requests_per_minute=10_000)
    name = f"bounded-{redis_namespace}"  # names this storage's connections in CLIENT LIST
    storage = RedisStorage.from_url(f"{redis_url}?client_name={name}", redis_namespace)
    router = Router([m], storage, RoutingConfig(), BreakerConfig())
    redis.Redis.from_url(redis_url).script_flush()  # every thread finds the scripts gone: reloads them
    threads = 3 * MAX_CONNECTIONS
    reserved, release = threading.Barrier(threads + 1), threading.Event()

    def one() -> None:  # reserves, then stays alive as a server's thread does
        router.acquire([m], length=1, tokens=1)
        reserved.wait()
        release.wait()

    pool = [threading.Thread(target=one) for _ in range(threads)]
    for thread in pool:
        thread.start()
    try:
        reserved.wait(timeout=60)
        opened = [c for c in redis.Redis.from_url(redis_url).client_list() if c["name"] == name]
    finally:
        release.set()
        for thread in pool:
            thread.join()
    assert 1 <= len(opened) <= MAX_CONNECTIONS
    assert router.snapshot()[0]["windows"][0]["used"] == threads
