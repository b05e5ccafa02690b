"""The gateway through a real gunicorn (preloaded app, forked gthread worker, the process's own log):
a smoke test of the paths a client uses. Their logic is tested in process in tests/api/test_chat.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from tests.builders import CLIENT_KEY, UPSTREAM_KEY, config, model
from tests.fakes.openai import FakeOpenAI
from tests.harness import GunicornServer, openai_client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def config_for(fake: FakeOpenAI) -> dict:
    return config(
        model(fake.chat_url, "openai/gpt-4o-mini", group="SMALL"),
        model(fake.chat_url, "groq/llama-3.3-70b-versatile", provider="groq", group="BIG"),
        http={"read_timeout": 5, "stream_idle_timeout": 5, "connect_timeout": 2},
        retry={"max_attempts": 1},
    )


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """One server for the module: the tests only add requests, none changes its state."""
    workdir: Path = tmp_path_factory.mktemp("gateway")
    with GunicornServer(config_for(fake), env={"AI_PROXY_API_KEYS": CLIENT_KEY}, workdir=workdir) as server:
        yield server
    print(f"--- gunicorn log:\n{server.log_tail()}")


def test_sdk_chat_and_stream_through_gunicorn(server: GunicornServer, fake: FakeOpenAI) -> None:
    client = openai_client(server, api_key=CLIENT_KEY)
    before = len(fake.chat_requests)
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Hi"}],
        temperature=0.3,
        extra_headers={"X-Request-ID": "my-trace-123"},
    )
    answer = raw.parse()
    assert answer.model == "openai/gpt-4o-mini" and answer.choices[0].message.content == "Hello!"
    assert raw.headers["X-AI-Proxy-Model"] == "openai/gpt-4o-mini"
    assert raw.headers["X-Request-ID"] == "my-trace-123"
    upstream = fake.chat_requests[before]
    assert upstream.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert upstream.json["model"] == "gpt-4o-mini" and upstream.json["temperature"] == 0.3

    fake.push_chat(content=["One ", "two ", "three ", "four"])
    text, usage = "", None
    for chunk in client.chat.completions.create(
        model="big",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        assert chunk.model == "groq/llama-3.3-70b-versatile"
        usage = chunk.usage or usage
        text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text == "One two three four"
    assert usage is not None and usage.total_tokens > 0


def test_raw_stream_framing_and_headers(server: GunicornServer) -> None:
    response = requests.post(
        f"{server.url}/chat/completions",  # the path without /v1 too
        json={"model": "SMALL", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        stream=True,
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers.get("Transfer-Encoding") == "chunked"
    events = [line for line in response.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks and chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_errors_and_the_process_log_keep_secrets(server: GunicornServer, fake: FakeOpenAI) -> None:
    client = openai_client(server, api_key=CLIENT_KEY)
    secret_text = "my-private-prompt-words"
    client.chat.completions.create(model="SMALL", messages=[{"role": "user", "content": secret_text}])
    fake.push_error("invalid_api_key")
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="SMALL", messages=[{"role": "user", "content": "hi"}])
    assert UPSTREAM_KEY not in info.value.response.text
    with pytest.raises(openai.AuthenticationError):
        openai_client(server, api_key="wrong-client-key").models.list()
    server.wait_for_log(r"GET /v1/models 401")
    log = server.log_text()
    for secret in (UPSTREAM_KEY, CLIENT_KEY, secret_text, "wrong-client-key", "Traceback"):
        assert secret not in log
    assert "POST /v1/chat/completions 200" in log and "served=openai/gpt-4o-mini" in log


def test_open_proxy_warns_loudly_at_start(fake: FakeOpenAI, gunicorn_server) -> None:
    server = gunicorn_server(config_for(fake))
    answer = openai_client(server, api_key="anything").chat.completions.create(
        model="SMALL", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "Hello!"
    assert "NO CLIENT API KEYS CONFIGURED" in server.log_text()
