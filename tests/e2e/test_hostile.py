"""Hostile upstreams through gunicorn: one server for the module, models of four providers pointed at
tests/fakes/hostile.py, driven plain and streamed through the official openai SDK.

Every case must end with the typed error (504 upstream_timeout / 502 upstream_error, as an HTTP
status or, once a stream has sent content, as its error event), within a wide multiple of its bound,
while the worker's memory stays bounded; and a group falls back from a hostile member to a healthy one.
The cases run concurrently (the worker has threads to spare), so the module takes a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.fakes.hostile import HostileServer
from tests.fakes.openai import FakeOpenAI
from tests.harness import GunicornServer, openai_client

KEY = "test-client-key"
CANARY = "sk-hostile-canary-token"
PROVIDERS = ("openai", "gemini", "cohere", "cloudflare")
KINDS = ("plain", "stream")
BOUND = 1.0  # read_timeout and stream_idle_timeout
CASES = {  # mode -> the error code it must end with
    "slow-headers": "upstream_timeout",
    "slow-body": "upstream_timeout",
    "comments": "upstream_timeout",
    "huge": "upstream_error",
    "gzip-bomb": "upstream_error",
    "long-line": "upstream_error",
}


def hostile_model(hostile: HostileServer, provider: str, mode: str, kind: str) -> dict[str, object]:
    """One model per case: a failed model cools down, so plain and stream get one each."""
    model: dict[str, object] = {
        "name": f"{provider}-{mode}-{kind}",
        "provider": provider,
        "url": f"{hostile.url}/{mode}/{provider}",
        "token": CANARY,
        "upstream_model": "@cf/hostile" if provider == "cloudflare" else "hostile",
    }
    return model


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GunicornServer, FakeOpenAI]]:
    with HostileServer() as hostile, FakeOpenAI() as healthy:
        models = [hostile_model(hostile, p, m, k) for p in PROVIDERS for m in CASES for k in KINDS]
        bad = {**hostile_model(hostile, "openai", "slow-headers", "plain"), "name": "bad"}
        good = {
            "name": "good",
            "provider": "openai",
            "url": healthy.chat_url,
            "token": "sk-fake-upstream-key",
        }
        models += [
            {**bad, "model_size": "SMALL", "priority": 1},
            {**good, "model_size": "SMALL", "priority": 2},
        ]
        config = {
            "models": models,
            "http": {
                "connect_timeout": 1,
                "read_timeout": BOUND,
                "stream_idle_timeout": BOUND,
                "stream_max_seconds": 2 * BOUND,
                "max_response_bytes": 1024 * 1024,
                "max_sse_line_bytes": 256 * 1024,
            },
            "retry": {"max_attempts": 1},
            "server": {"heartbeat_seconds": 0},
        }
        workdir: Path = tmp_path_factory.mktemp("hostile")
        with GunicornServer(config, env={"AI_PROXY_API_KEYS": KEY}, workdir=workdir) as server:
            yield server, healthy


def worker_rss(server: GunicornServer) -> int:
    """The resident memory of the server's processes (master and worker), in bytes."""
    total = 0
    for pid in server.pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def outcome(client: openai.OpenAI, model: str, stream: bool) -> tuple[str, str, float]:
    """(error code, message, seconds) of one request that must fail."""
    start = time.monotonic()
    messages = [{"role": "user", "content": "hi"}]
    try:
        if stream:
            for _ in client.chat.completions.create(model=model, messages=messages, stream=True):
                pass
        else:
            client.chat.completions.create(model=model, messages=messages)
    except openai.APIStatusError as exc:  # before any content: an HTTP error status
        error = exc.body if isinstance(exc.body, dict) else {}
        expected_status = {"upstream_timeout": 504, "upstream_error": 502}.get(str(error.get("code")))
        assert exc.status_code == expected_status, (model, exc.status_code, error)
    except openai.APIError as exc:  # after content: the stream's error event
        error = exc.body if isinstance(exc.body, dict) else {}
    else:
        pytest.fail(f"{model} (stream={stream}) succeeded against a hostile upstream")
    return str(error.get("code")), str(error.get("message")), time.monotonic() - start


def test_every_hostile_mode_ends_typed_in_bounded_time_and_memory(servers) -> None:
    server, _ = servers
    client = openai_client(server, api_key=KEY, max_retries=0, timeout=30)
    cases = [
        (f"{p}-{m}-{kind}", code, kind == "stream")
        for p in PROVIDERS
        for m, code in CASES.items()
        for kind in KINDS
    ]
    before = worker_rss(server)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda case: outcome(client, case[0], case[2]), cases))
    grown = worker_rss(server) - before
    for (model, code, stream), (got, message, took) in zip(cases, results, strict=True):
        assert got == code, (model, stream, got, message)
        assert took < 10 * 2 * BOUND, (model, stream, took)  # each trickle alone would run for minutes
        assert CANARY not in message and "127.0.0.1" not in message
    # without the caps one 100 MB answer took a worker to 358 MB, one gzip bomb to 1.5 GB
    assert grown < 200 * 1024 * 1024, grown
    assert CANARY not in server.log_text()


def test_a_group_falls_back_from_a_hostile_member(servers) -> None:
    server, healthy = servers
    client = openai_client(server, api_key=KEY, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="SMALL", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["X-AI-Proxy-Model"] == "good" and raw.parse().model == "good"
    pieces = client.chat.completions.create(
        model="SMALL", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    assert text  # the healthy member answered the stream
    assert [r.json["model"] for r in healthy.chat_requests][-2:] == ["good", "good"]
