"""The gateway core end to end: real gunicorn, the official openai SDK, a fake OpenAI upstream."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
import requests

from tests.fakes.openai import FakeOpenAI, tool_call
from tests.fakes.server import Behavior
from tests.harness import openai_client

CLIENT_KEY = "test-client-key-0123456789"
UPSTREAM_KEY = "sk-fake-upstream-key"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def config_for(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    models = [
        {
            "name": "openai/gpt-4o-mini",
            "provider": "openai",
            "url": fake.chat_url,
            "token": UPSTREAM_KEY,
            "model_size": "SMALL",
        },
        {
            "name": "groq/llama-3.3-70b-versatile",
            "provider": "groq",
            "url": fake.chat_url,
            "token": UPSTREAM_KEY,
            "model_size": "BIG",
        },
        {
            "name": "disabled/model",
            "provider": "openai",
            "url": fake.chat_url,
            "token": "${NOT_SET_ANYWHERE}",
        },
    ]
    config: dict[str, Any] = {
        "models": models,
        "server": {"max_body_bytes": 200_000},
        "http": {"read_timeout": 2, "stream_idle_timeout": 2, "connect_timeout": 1},
        "retry": {"max_attempts": 1},
        "routing": {"cooldown_seconds": 0},
    }
    config.update(extra)
    return config


@pytest.fixture
def server(fake_openai: FakeOpenAI, gunicorn_server):
    return gunicorn_server(config_for(fake_openai), env={"AI_PROXY_API_KEYS": CLIENT_KEY})


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai_client(server, api_key=CLIENT_KEY)


def ask(client: openai.OpenAI, model: str = "openai/gpt-4o-mini", **kwargs: Any):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], **kwargs
    )


def test_models_lists_enabled_models_and_groups(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["openai/gpt-4o-mini", "groq/llama-3.3-70b-versatile", "BIG", "SMALL"]


def test_chat_passes_every_field_and_rewrites_only_model(client, fake_openai: FakeOpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        temperature=0.3,
        max_tokens=50,
        stop=["\n\n"],
        seed=7,
        n=1,
        response_format={"type": "json_object"},
        tools=TOOLS,
        tool_choice="auto",
        extra_body={"top_k": 5, "custom_field": {"nested": True}},
        extra_headers={"X-Request-ID": "my-trace-123"},
    )
    answer = raw.parse()
    assert answer.model == "openai/gpt-4o-mini"
    assert answer.choices[0].message.content == "Hello!"
    assert answer.usage is not None and answer.usage.total_tokens > 0
    assert raw.headers["X-AI-Proxy-Model"] == "openai/gpt-4o-mini"
    assert raw.headers["X-Request-ID"] == "my-trace-123"
    (upstream,) = fake_openai.chat_requests
    assert upstream.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    sent = upstream.json
    assert sent["model"] == "gpt-4o-mini"
    for key, value in {
        "temperature": 0.3,
        "max_tokens": 50,
        "stop": ["\n\n"],
        "seed": 7,
        "n": 1,
        "response_format": {"type": "json_object"},
        "tools": TOOLS,
        "tool_choice": "auto",
        "top_k": 5,
        "custom_field": {"nested": True},
    }.items():
        assert sent[key] == value, key
    assert sent["messages"][0] == {"role": "system", "content": "Be terse."}


def test_group_request_serves_a_member(client) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="big", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["X-AI-Proxy-Model"] == "groq/llama-3.3-70b-versatile"
    assert raw.parse().model == "groq/llama-3.3-70b-versatile"
    assert len(raw.headers["X-Request-ID"]) >= 16


def test_paths_without_v1_prefix(server, fake_openai: FakeOpenAI) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    listed = requests.get(f"{server.url}/models", headers=headers, timeout=5)
    assert listed.status_code == 200 and listed.json()["object"] == "list"
    answer = requests.post(
        f"{server.url}/chat/completions",
        json={"model": "SMALL", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        timeout=5,
    )
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "Hello!"


def test_stream_arrives_incrementally(client, fake_openai: FakeOpenAI) -> None:
    fake_openai.push_chat(content=["One ", "two ", "three ", "four"], chunk_delay=0.3)
    received: list[tuple[float, str]] = []
    with client.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        usage = None
        for chunk in stream:
            assert chunk.model == "openai/gpt-4o-mini"
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    received.append((time.monotonic(), choice.delta.content))
    assert "".join(text for _, text in received) == "One two three four"
    (upstream,) = fake_openai.chat_requests
    last_sent = upstream.sent_at[-1]
    assert received[0][0] < last_sent - 0.5, "first chunk must reach the client long before the last is sent"
    assert usage is not None and usage.total_tokens > 0


def test_raw_stream_framing_and_headers(server, fake_openai: FakeOpenAI) -> None:
    response = requests.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "SMALL", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        stream=True,
        timeout=5,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-AI-Proxy-Model"] == "openai/gpt-4o-mini"
    events = [line for line in response.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    # the client did not ask for usage: the usage-only chunk the proxy requested upstream is dropped
    assert all(c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_pass_through(client, fake_openai: FakeOpenAI, stream: bool) -> None:
    fake_openai.push_chat(tool_calls=[tool_call("get_weather", {"city": "Paris"}, id="call_abc")])
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if not stream:
        answer = client.chat.completions.create(model="SMALL", messages=messages, tools=TOOLS)
        call = answer.choices[0].message.tool_calls[0]
        assert answer.choices[0].finish_reason == "tool_calls"
        assert (call.id, call.function.name) == ("call_abc", "get_weather")
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        return
    arguments, names, finish = "", [], None
    for chunk in client.chat.completions.create(model="SMALL", messages=messages, tools=TOOLS, stream=True):
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                if delta.function.name:
                    names.append(delta.function.name)
                arguments += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Paris"}
    assert finish == "tool_calls"


def test_health_and_ping_need_no_key(server) -> None:
    assert requests.get(f"{server.url}/health", timeout=5).json()["status"] == "ok"
    ping = requests.get(f"{server.url}/ping", timeout=5)
    assert ping.text == "OK" and ping.headers["X-Request-ID"]


def test_missing_or_wrong_key_is_401(server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {CLIENT_KEY}"}):
        response = requests.get(f"{server.url}/v1/models", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert CLIENT_KEY not in response.text
    with pytest.raises(openai.AuthenticationError):
        ask(openai_client(server, api_key="nope"))


def test_unknown_model_is_404(client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        ask(client, model="no/such-model")
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        ask(client, model="disabled/model")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "SMALL"}, "messages"),
        ({"model": "SMALL", "messages": []}, "messages"),
        ({"model": "SMALL", "messages": ["hi"]}, "messages[0]"),
        ({"model": "SMALL", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "SMALL", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "SMALL", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}, "stream"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(server, body: dict[str, Any], param: str) -> None:
    response = requests.post(
        f"{server.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=5,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_non_json_and_non_object_bodies(server) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
    for data in (b"{not json", b"[1, 2]", b""):
        response = requests.post(f"{server.url}/v1/chat/completions", data=data, headers=headers, timeout=5)
        assert response.status_code == 400, data
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert "Traceback" not in response.text


def test_body_over_limit_is_413(server) -> None:
    big = {"model": "SMALL", "messages": [{"role": "user", "content": "x" * 300_000}]}
    response = requests.post(
        f"{server.url}/v1/chat/completions",
        json=big,
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=5,
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_path_and_method_are_openai_errors(server) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    missing = requests.get(f"{server.url}/v1/nothing-here", headers=headers, timeout=5)
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = requests.get(f"{server.url}/v1/chat/completions", headers=headers, timeout=5)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("kind", "exception", "status"),
    [
        ("invalid_request", openai.BadRequestError, 400),
        ("context_length_exceeded", openai.BadRequestError, 400),
        ("model_not_found", openai.BadRequestError, 400),
        ("invalid_api_key", openai.InternalServerError, 502),
        ("forbidden", openai.InternalServerError, 502),
        ("rate_limit", openai.RateLimitError, 429),
        ("server_error", openai.InternalServerError, 502),
        ("overloaded", openai.InternalServerError, 502),
    ],
)
def test_upstream_errors_map_to_openai_errors(
    client, fake_openai: FakeOpenAI, server, kind: str, exception: type, status: int
) -> None:
    fake_openai.push_error(kind)
    with pytest.raises(exception) as info:
        ask(client)
    assert info.value.status_code == status
    body = info.value.body if isinstance(info.value.body, dict) else {}
    assert set(body) >= {"message", "type", "code"}
    assert UPSTREAM_KEY not in str(info.value.response.text)
    if kind == "invalid_request":
        assert "Invalid" in body["message"] or "invalid" in body["message"]
    if kind == "invalid_api_key":
        assert "credentials for model openai/gpt-4o-mini were rejected" in body["message"]
    if kind == "forbidden":  # OpenAI's 403 for the proxy's region: not the key's fault, so not an auth rest
        assert "refused to serve: Country, region, or territory not supported" in body["message"]


def test_upstream_timeout_is_504_and_drop_is_502(client, fake_openai: FakeOpenAI) -> None:
    fake_openai.push_chat(delay=4)
    with pytest.raises(openai.APIStatusError) as info:
        ask(client)
    assert info.value.status_code == 504
    fake_openai.push("chat", Behavior(drop=True))
    with pytest.raises(openai.InternalServerError) as info:
        ask(client)
    assert info.value.status_code == 502


def test_unreadable_upstream_answer_is_502(client, fake_openai: FakeOpenAI) -> None:
    fake_openai.push(
        "chat", Behavior(body=b"<html>gateway hiccup</html>", headers={"Content-Type": "text/html"})
    )
    with pytest.raises(openai.InternalServerError) as info:
        ask(client)
    assert info.value.status_code == 502


def test_no_secret_or_body_in_logs(server, client, fake_openai: FakeOpenAI) -> None:
    secret_text = "my-private-prompt-words"
    client.chat.completions.create(model="SMALL", messages=[{"role": "user", "content": secret_text}])
    fake_openai.push_error("invalid_api_key")
    with pytest.raises(openai.InternalServerError):
        ask(client)
    with pytest.raises(openai.AuthenticationError):
        ask(openai_client(server, api_key="wrong-client-key"))
    server.wait_for_log(r"POST /v1/chat/completions 401")
    log = server.log_text()
    for secret in (UPSTREAM_KEY, CLIENT_KEY, secret_text, "wrong-client-key", "Traceback"):
        assert secret not in log
    assert "POST /v1/chat/completions 200" in log and "served=openai/gpt-4o-mini" in log


def test_open_proxy_warns_loudly(fake_openai: FakeOpenAI, gunicorn_server) -> None:
    server = gunicorn_server(config_for(fake_openai))
    answer = ask(openai_client(server, api_key="anything"))
    assert answer.choices[0].message.content == "Hello!"
    assert "NO CLIENT API KEYS CONFIGURED" in server.log_text()


@pytest.mark.parametrize("mode", ["split", "strip", "keep"])
def test_think_tags_follow_the_models_reasoning_mode(
    fake_openai: FakeOpenAI, gunicorn_server, mode: str
) -> None:
    config = config_for(fake_openai)
    config["models"][0]["reasoning"] = mode
    server = gunicorn_server(config, env={"AI_PROXY_API_KEYS": CLIENT_KEY})
    client = openai_client(server, api_key=CLIENT_KEY)
    pieces = ["<thi", "nk>Let me ", "think.</th", "ink>\n\nThe answer", " is 4."]
    fake_openai.push_chat(content="".join(pieces))
    message = ask(client).choices[0].message
    fake_openai.push_chat(content=pieces)
    content = reasoning = ""
    for chunk in ask(client, stream=True):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasoning += getattr(choice.delta, "reasoning_content", None) or ""
    if mode == "keep":
        assert message.content == content == "".join(pieces)
        return
    assert message.content == content == "The answer is 4."
    expected = "Let me think." if mode == "split" else None
    assert getattr(message, "reasoning_content", None) == expected
    assert reasoning == (expected or "")
