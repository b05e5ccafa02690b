"""Fixtures for the routing tests: an injected clock, model configs, and storages of both kinds."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from app.config import BreakerConfig, ModelConfig, RoutingConfig
from app.routing import MemoryStorage, RedisClusterStorage, RedisStorage, Router
from app.routing.storage import Storage
from tests.redis_servers import LocalRedis

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


@pytest.fixture(scope="session")
def local_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """Where the cluster and TLS servers run when no URL is given: started on first use."""
    servers = LocalRedis(tmp_path_factory.mktemp("redis-servers"))
    yield servers
    servers.stop()


def _server_url(request: pytest.FixtureRequest, variable: str, start: Callable[[LocalRedis], str]) -> str:
    """The URL in `variable`, else a server started here; skips when neither can be had."""
    url = os.environ.get(variable)
    if url:
        storage = (RedisClusterStorage if "+cluster://" in url else RedisStorage).from_url(url, "probe")
        try:
            storage.ping()
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            pytest.skip(f"{variable} is set but does not answer: {exc}")
        return url
    missing = [tool for tool in ("redis-server", "openssl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{variable} not set and {', '.join(missing)} not on PATH to start a local server")
    return start(request.getfixturevalue("local_redis"))


@pytest.fixture(scope="session")
def cluster_url(request: pytest.FixtureRequest) -> str:
    """`AI_PROXY_TEST_CLUSTER_URL` (redis+cluster://), else a local 3-master cluster."""
    return _server_url(request, "AI_PROXY_TEST_CLUSTER_URL", LocalRedis.cluster)


@pytest.fixture(scope="session")
def tls_url(request: pytest.FixtureRequest) -> str:
    """`AI_PROXY_TEST_TLS_URL` (rediss://), else a local TLS Redis with a self-signed certificate."""
    return _server_url(request, "AI_PROXY_TEST_TLS_URL", LocalRedis.tls)


def _drop_namespace(url: str, namespace: str) -> None:
    """Delete a test namespace's keys (one key per call: on a cluster they may sit in any slot)."""
    if "+cluster://" in url:
        client: Any = redis.RedisCluster.from_url(url.replace("+cluster://", "://"))
    else:
        client = redis.Redis.from_url(url)
    for key in list(client.scan_iter(match=f"{namespace}:*", count=1000)):
        client.delete(key)
    client.close()


@pytest.fixture
def shared_storage(request: pytest.FixtureRequest) -> Iterator[Callable[[], RedisStorage]]:
    """`shared_storage(kind)`, kind "cluster" or "tls": storages over one fresh namespace there."""
    namespace = f"test-routing-{uuid.uuid4().hex}"
    used: set[str] = set()

    def make(kind: str) -> RedisStorage:
        if kind == "cluster":
            url = request.getfixturevalue("cluster_url")
            used.add(url)
            return RedisClusterStorage.from_url(url, namespace)
        url = request.getfixturevalue("tls_url")
        used.add(url)
        return RedisStorage.from_url(url, namespace)

    yield make
    for url in used & {os.environ.get("AI_PROXY_TEST_CLUSTER_URL"), os.environ.get("AI_PROXY_TEST_TLS_URL")}:
        _drop_namespace(url, namespace)  # a server of yours; the local ones go away with the session


STORAGE_KINDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.redis),
    pytest.param("tls", marks=pytest.mark.redis),
]


# For tests of hundreds of threads: each opens its own connection, and 200 TLS handshakes take
# seconds; the TLS transport is covered by every other contract test.
WITHOUT_TLS = pytest.mark.parametrize("make_storage", STORAGE_KINDS[:3], indirect=True)


@pytest.fixture(params=STORAGE_KINDS)
def make_storage(request: pytest.FixtureRequest) -> Callable[[], Storage]:
    """Each call gives a storage over the same shared state (as another worker would see it)."""
    if request.param == "memory":
        shared = MemoryStorage()
        return lambda: shared
    if request.param in ("cluster", "tls"):
        make = request.getfixturevalue("shared_storage")
        return lambda: make(request.param)
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
