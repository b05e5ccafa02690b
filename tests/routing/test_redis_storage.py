"""What only the Redis storage has: start-up checks, failing closed in an outage, namespaces."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from app.config import BreakerConfig, ConfigError, RoutingConfig
from app.errors import RateLimited, ServiceUnavailable, UpstreamError
from app.routing import MemoryStorage, RedisStorage, Router, create_storage
from tests.routing.conftest import FakeClock, model


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_create_storage_memory() -> None:
    assert isinstance(create_storage("memory", namespace="x"), MemoryStorage)


def test_create_storage_with_redis_down_is_a_one_line_config_error() -> None:
    url = f"redis://user:hunter2@127.0.0.1:{closed_port()}/0"
    with pytest.raises(ConfigError) as err:
        create_storage(url, namespace="ai-proxy")
    message = str(err.value)
    assert message.startswith("storage: Redis not reachable at redis://***@127.0.0.1:")
    assert "hunter2" not in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.redis
def test_create_storage_redis(redis_url: str, redis_namespace: str) -> None:
    assert isinstance(create_storage(redis_url, namespace=redis_namespace), RedisStorage)


class Relay:
    """A TCP relay in front of Redis that a test can cut and restore, like a network outage
    (the shared Redis server itself keeps running for everyone else)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = True
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.mark.redis
def test_outage_fails_closed_then_recovers(
    redis_url: str, redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(redis_url)
    if parts.scheme != "redis":
        pytest.skip("the outage test relays TCP; REDIS_URL is not redis://")
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 6379))
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{relay.port}" if userinfo else f"127.0.0.1:{relay.port}"
    storage = RedisStorage.from_url(urlunsplit(parts._replace(netloc=netloc)), redis_namespace)
    m = model(requests_per_minute=100, tokens_per_minute=10_000)
    router = Router([m], storage, RoutingConfig(), BreakerConfig(fail_max=1), clock=FakeClock())
    held = router.acquire([m], length=1, tokens=10)
    caplog.set_level(logging.INFO)
    relay.cut()
    try:
        for _ in range(2):
            with pytest.raises(ServiceUnavailable, match=r"^quota storage unavailable$"):
                router.acquire([m], length=1, tokens=10)
            # outcomes are best effort: counted and logged, never raised
            router.succeeded(held, {}, used_tokens=5)
            router.failed(held, UpstreamError("502"))
        assert router.settle_failures == 4
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert all(r.name == "ai_proxy.routing" and r.exc_info is None for r in warnings)
        assert ["refusing requests" in r.getMessage() for r in warnings] == [True] + [False] * 4
        relay.up = True
        router.acquire([m], length=1, tokens=10)
        assert "quota storage reachable again" in caplog.messages
        assert router.snapshot()[0]["breaker"] == "closed"  # the outage was not the model's fault
    finally:
        relay.close()


@pytest.mark.redis
def test_namespaces_keep_deployments_apart(redis_url: str, redis_namespace: str) -> None:
    other = f"{redis_namespace}-other"
    m = model(requests_per_minute=1)
    clock = FakeClock()
    one = Router(
        [m], RedisStorage.from_url(redis_url, redis_namespace), RoutingConfig(), BreakerConfig(), clock=clock
    )
    two = Router([m], RedisStorage.from_url(redis_url, other), RoutingConfig(), BreakerConfig(), clock=clock)
    one.acquire([m], length=1, tokens=1)
    with pytest.raises(RateLimited):
        one.acquire([m], length=1, tokens=1)
    two.acquire([m], length=1, tokens=1)
    client = redis.Redis.from_url(redis_url)
    try:
        mine = [k.decode() for k in client.scan_iter(match=f"{redis_namespace}:*")]
        assert mine and all(k.startswith(f"{redis_namespace}:") for k in mine)
        assert any(k.startswith(f"{redis_namespace}:breaker:") for k in mine)
        theirs = list(client.scan_iter(match=f"{other}:*"))
        assert theirs
        client.delete(*theirs)
    finally:
        client.close()
