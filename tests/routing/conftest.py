"""Fixtures for the routing tests: an injected clock, model configs, and storages of both kinds."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from app.config import BreakerConfig, ModelConfig, RoutingConfig
from app.routing import MemoryStorage, RedisStorage, Router
from app.routing.storage import Storage

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def model(name: str = "groq/a", **fields: Any) -> ModelConfig:
    provider = fields.pop("provider", name.split("/")[0] if "/" in name else "openai")
    return ModelConfig(
        name=name,
        provider=provider,
        url="https://upstream.invalid/v1/chat/completions",
        upstream_model=name.split("/")[-1],
        token="sk-secret-test-token",
        **fields,
    )


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        pytest.skip(f"Redis not reachable at {REDIS_URL}: start redis-server or set REDIS_URL")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A fresh namespace, deleted afterwards."""
    namespace = f"test-routing-{uuid.uuid4().hex}"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_storage(request: pytest.FixtureRequest) -> Callable[[], Storage]:
    """Each call gives a storage over the same shared state (as another worker would see it)."""
    if request.param == "memory":
        shared = MemoryStorage()
        return lambda: shared
    url = request.getfixturevalue("redis_url")
    namespace = request.getfixturevalue("redis_namespace")
    return lambda: RedisStorage.from_url(url, namespace)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_router(make_storage: Callable[[], Storage], clock: FakeClock) -> Callable[..., Router]:
    def make(
        models: list[ModelConfig],
        *,
        cooldown: float = 30.0,
        fail_max: int = 3,
        reset_timeout: float = 30.0,
    ) -> Router:
        return Router(
            models,
            make_storage(),
            RoutingConfig(cooldown_seconds=cooldown),
            BreakerConfig(fail_max=fail_max, reset_timeout=reset_timeout),
            clock=clock,
        )

    return make
