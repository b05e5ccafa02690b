"""Shared fixtures: fake upstreams, the app in process, real gunicorn servers, Redis."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.harness import GunicornServer, InProcessProxy

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running FakeOpenAI (flavor openai, key `sk-fake-upstream-key`), stopped after the test."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def in_process() -> Iterator[Callable[..., InProcessProxy]]:
    """Factory: `in_process(config, env=..., clock=...)` builds an `InProcessProxy` (same arguments);
    every one is closed at teardown."""
    proxies: list[InProcessProxy] = []

    def build(config_yaml: Any, **kwargs: Any) -> InProcessProxy:
        proxy = InProcessProxy(config_yaml, **kwargs)
        proxies.append(proxy)
        return proxy

    yield build
    for proxy in reversed(proxies):
        proxy.close()


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[Callable[..., GunicornServer]]:
    """Factory: `gunicorn_server(config, env=..., workers=..., ...)` starts a GunicornServer (same
    arguments) and returns it; every server still running is killed at teardown (a test of shutdown
    stops it itself), its log tail printed (pytest shows it for failing tests) and kept under
    tmp_path."""
    servers: list[GunicornServer] = []

    def start(config_yaml: Any, **kwargs: Any) -> GunicornServer:
        kwargs.setdefault("workdir", tmp_path / f"gunicorn-{len(servers)}")
        server = GunicornServer(config_yaml, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        code = server.kill()
        print(f"--- gunicorn on port {server.port} exited {code}; {server.log_path}:\n{server.log_tail()}")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """`REDIS_URL` or redis://127.0.0.1:6379/15, FLUSHED before and after the test (use a disposable
    DB); skips the test when Redis does not answer within 0.5 s. Under pytest-xdist every test that
    uses it runs in one worker (see below), so parallel workers never flush each other's data."""
    import redis

    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"Redis not reachable at {url}: start redis-server or set REDIS_URL ({exc})")
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests using `redis_url` are marked `redis`, those using `gunicorn_server` are marked `e2e`.

    For pytest-xdist's `--dist loadgroup`: the tests of one file share a group (one worker starts a
    module's servers and fakes once), except that every test using Redis is in the group `redis`, so
    they all use the one database of REDIS_URL, one after another."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "redis_url" in names:
            item.add_marker(pytest.mark.redis)
            item.add_marker(pytest.mark.xdist_group("redis"))
        else:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
        if "gunicorn_server" in names:
            item.add_marker(pytest.mark.e2e)
