"""One fake OpenAI upstream and one gunicorn server per test module, shared by the SDK tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.harness import GunicornServer

CLIENT_KEY = "fronts-client-key-5d2e"
UPSTREAM_KEY = "sk-fake-upstream-key"


def front_config(fake: FakeOpenAI) -> dict[str, Any]:
    """Two SMALL models, one BIG and one without a group on the fake; clients' names by alias."""

    def model(name: str, group: str, priority: int) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "openai",
            "url": fake.chat_url,
            "token": UPSTREAM_KEY,
            "priority": priority,
            "model_size": group,
        }

    return {
        "models": [
            model("fake/small-a", "SMALL", 1),
            model("fake/small-b", "SMALL", 2),
            model("fake/big", "BIG", 1),
            model("fake/limited", "", 1),  # for 429s: a rate-limited model rests, the others must not
        ],
        "aliases": {"claude-*haiku*": "SMALL", "claude-*": "BIG", "gpt-*": "BIG"},
        "server": {"heartbeat_seconds": 5},
        "http": {"connect_timeout": 2, "read_timeout": 10, "stream_idle_timeout": 5},
        "retry": {"max_attempts": 1},
        "routing": {"cooldown_seconds": 0},
        "breaker": {"fail_max": 1000},
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def front_server(upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    workdir = tmp_path_factory.mktemp("fronts")
    with GunicornServer(
        front_config(upstream), env={"AI_PROXY_API_KEYS": CLIENT_KEY}, workdir=workdir
    ) as server:
        yield server
        print(server.log_tail())


@pytest.fixture
def fake(upstream: FakeOpenAI) -> FakeOpenAI:
    """The module's upstream with no scripted answers left over from an earlier test."""
    upstream.routes["chat"].script.clear()
    return upstream
