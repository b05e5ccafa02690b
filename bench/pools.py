"""Routing cost of a big key pool, in-process: a group of 20 models x 50 keys (1,000 slots).

    python -m bench.pools [--redis URL] [--rounds N]

Each round reserves (router.acquire) and settles (router.succeeded) one request for a concrete
model of the pool, then one for the whole group, interleaved so that both see the same machine;
the figure is the difference of the medians. With --redis it also counts the round trips each group
request makes (MONITOR, counting only commands from clients, not those a script runs inside Redis)
and the time Redis spends on each reservation (INFO commandstats: EVALSHA's usec per call over the
run; shown only when no other client ran a script meanwhile, so use a server of your own).
The limits are high enough that no slot runs out during the run, so every reservation takes the
first slot it tries in least-recently-used ordering: the cost measured is the ranking and the atomic
step, not a search for quota. Then a quarter of the slots rest (an upstream 429 with an hour's
Retry-After, as keys spent for the day would) and the group is timed again once they are the least
recently used: each reservation would find them first.
"""

from __future__ import annotations

import argparse
import threading
import time
from statistics import median
from typing import Any

import redis

from app.config import parse_config
from app.errors import RateLimited
from app.routing import Router, create_storage

MODELS, KEYS = 20, 50
RESTING = MODELS * KEYS // 4
NAMESPACE = "ai-proxy-bench-pools"


def pool_config(storage: str) -> Any:
    models = [
        {
            "name": f"bench/m{m:02d}",
            "provider": "openai",
            "url": "http://127.0.0.1:9/v1/chat/completions",
            "keys": [f"sk-bench-m{m:02d}-k{k:02d}" for k in range(KEYS)],
            "requests_per_minute": 1_000_000,
            "requests_per_day": 10_000_000,
            "model_size": "POOL",
        }
        for m in range(MODELS)
    ]
    return parse_config({"models": models, "storage": storage}, {})


def round_trips(url: str, router: Router, candidates: list[Any], requests: int) -> float:
    """Commands clients sent to Redis per request (reserve + settle), seen by MONITOR; the commands a
    script runs inside Redis are listed with the client `lua` and are not round trips."""
    client, stopper = redis.Redis.from_url(url), redis.Redis.from_url(url)
    stopper.ping()  # its connection's handshake (HELLO) before MONITOR starts: it is not the proxy's
    sent: list[str] = []
    with client.monitor() as monitor:
        ready = threading.Event()

        def watch() -> None:
            ready.set()
            for command in monitor.listen():
                if command["command"] == "ECHO ai-proxy-bench-stop":
                    return
                if command.get("client_type") != "lua" and "lua" not in str(command.get("client_address")):
                    sent.append(command["command"].split()[0])

        watcher = threading.Thread(target=watch)
        watcher.start()
        ready.wait()
        time.sleep(0.2)
        for _ in range(requests):
            router.succeeded(router.acquire(candidates, length=10, tokens=0), {}, None)
        stopper.echo("ai-proxy-bench-stop")
        watcher.join(10)
    client.close()
    stopper.close()
    return len(sent) / requests


def redis_time(url: str, router: Router, candidates: list[Any], requests: int) -> float:
    """Microseconds Redis spends per reservation (each is one EVALSHA; succeeded() with no usage
    and no headers sends nothing), from INFO commandstats before and after; NaN when the server ran
    other scripts meanwhile."""
    client = redis.Redis.from_url(url)

    def evalsha() -> tuple[int, int]:
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
        return stats.get("calls", 0), stats.get("usec", 0)

    calls, usec = evalsha()
    for _ in range(requests):
        router.succeeded(router.acquire(candidates, length=10, tokens=0), {}, None)
    after_calls, after_usec = evalsha()
    client.close()
    return (after_usec - usec) / requests if after_calls - calls == requests else float("nan")


def timed(router: Router, candidates: list[Any]) -> float:
    """Milliseconds for one reservation and its settlement."""
    started = time.perf_counter()
    router.succeeded(router.acquire(candidates, length=10, tokens=0), {}, None)
    return (time.perf_counter() - started) * 1000.0


def rest_a_quarter(router: Router, group: list[Any]) -> None:
    """Rest RESTING slots for an hour, then use every other slot once: the resting ones are then
    the least recently used, the first a reservation finds."""
    for _ in range(RESTING):
        router.failed(router.acquire(group, length=10, tokens=0), RateLimited("429", retry_after=3600))
    for _ in range(MODELS * KEYS - RESTING):
        router.succeeded(router.acquire(group, length=10, tokens=0), {}, None)


def measure(storage_url: str, rounds: int) -> dict[str, float]:
    config = pool_config(storage_url)
    storage = create_storage(config.storage, namespace=NAMESPACE)
    router = Router(config.models, storage, config.routing, config.breaker)
    concrete = router.resolve("bench/m00", "chat")
    group = router.resolve("POOL", "chat")
    timings: dict[str, list[float]] = {"concrete": [], "group": []}
    for _ in range(50):  # warm up both paths (script load, first allocations)
        for candidates in (concrete, group):
            router.succeeded(router.acquire(candidates, length=10, tokens=0), {}, None)
    for _ in range(rounds):
        for name, candidates in (("concrete", concrete), ("group", group)):
            timings[name].append(timed(router, candidates))
    result = {f"{name} p50 (ms)": median(values) for name, values in timings.items()}
    result["group - concrete (ms)"] = result["group p50 (ms)"] - result["concrete p50 (ms)"]
    result["group / concrete"] = result["group p50 (ms)"] / result["concrete p50 (ms)"]
    redis_url = storage_url if storage_url != "memory" else ""
    if redis_url:
        result["redis round trips per group request (reserve + settle)"] = round_trips(
            redis_url, router, group, 100
        )
        for name, candidates in (("concrete", concrete), ("group", group)):
            figure = redis_time(redis_url, router, candidates, 1000)
            result[f"redis time per {name} reservation (us)"] = figure
    rest_a_quarter(router, group)
    resting = f"group, {RESTING} slots resting"
    result[f"{resting}, p50 (ms)"] = median(
        timed(router, group) for _ in range(min(rounds, MODELS * KEYS - RESTING))
    )
    if redis_url:
        result[f"redis time per reservation, {resting} (us)"] = redis_time(redis_url, router, group, 200)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="", help="also measure over this Redis URL (its db is used as is)")
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    for label, url in (("memory", "memory"), ("redis", args.redis)):
        if not url:
            continue
        print(f"{label}: {MODELS} models x {KEYS} keys = {MODELS * KEYS} slots, {args.rounds} rounds")
        for key, value in measure(url, args.rounds).items():
            print(f"  {key}: {value:.3f}")


if __name__ == "__main__":
    main()
