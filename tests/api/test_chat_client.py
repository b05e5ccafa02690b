"""The chat front API as a client sees it, in process: Flask's test client or the official openai SDK
(over httpx's WSGI transport) in front of `create_app`, and a fake OpenAI upstream that is a real
server on 127.0.0.1. (tests/e2e/test_gateway.py keeps the same paths through a real gunicorn as a
smoke test.)"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.builders import CLIENT_KEY, UPSTREAM_KEY, config, model
from tests.fakes.openai import FakeOpenAI, tool_call
from tests.fakes.server import Behavior
from tests.harness import InProcessProxy

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
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


def config_for(fake: FakeOpenAI, **sections: Any) -> dict[str, Any]:
    sections.setdefault("server", {"max_body_bytes": 200_000})
    sections.setdefault("http", {"read_timeout": 2, "stream_idle_timeout": 2, "connect_timeout": 1})
    sections.setdefault("retry", {"max_attempts": 1})
    sections.setdefault("routing", {"cooldown_seconds": 0})
    return config(
        model(fake.chat_url, "openai/gpt-4o-mini", group="SMALL"),
        model(fake.chat_url, "groq/llama-3.3-70b-versatile", provider="groq", group="BIG"),
        model(fake.chat_url, "disabled/model", token="${NOT_SET_ANYWHERE}", group=None),
        **sections,
    )


@pytest.fixture
def api(fake_openai: FakeOpenAI, in_process) -> InProcessProxy:
    return in_process(config_for(fake_openai), env={"AI_PROXY_API_KEYS": CLIENT_KEY})


@pytest.fixture
def client(api: InProcessProxy) -> openai.OpenAI:
    return api.openai(CLIENT_KEY)


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


def test_paths_without_v1_prefix(api: InProcessProxy) -> None:
    listed = api.client.get("/models", headers=AUTH)
    assert listed.status_code == 200 and listed.json["object"] == "list"
    answer = api.client.post(
        "/chat/completions",
        json={"model": "SMALL", "messages": [{"role": "user", "content": "hi"}]},
        headers=AUTH,
    )
    assert answer.status_code == 200 and answer.json["choices"][0]["message"]["content"] == "Hello!"


def test_stream_carries_every_piece_and_usage(client, fake_openai: FakeOpenAI) -> None:
    fake_openai.push_chat(content=["One ", "two ", "three ", "four"])
    received: list[str] = []
    usage = None
    with client.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        for chunk in stream:
            assert chunk.model == "openai/gpt-4o-mini"
            usage = chunk.usage or usage
            received.extend(c.delta.content for c in chunk.choices if c.delta.content)
    assert received == ["One ", "two ", "three ", "four"]
    assert usage is not None and usage.total_tokens > 0


def test_stream_is_relayed_before_the_upstream_finishes(fake_openai: FakeOpenAI, in_process) -> None:
    """The first piece reaches the client while the upstream is still stalled after it: nothing is
    buffered. (The stall is cut by stream_idle_timeout, which this api keeps short.)"""
    cfg = config_for(fake_openai, http={"read_timeout": 5, "stream_idle_timeout": 0.5, "connect_timeout": 1})
    api = in_process(cfg, env={"AI_PROXY_API_KEYS": CLIENT_KEY})
    fake_openai.push_chat(content=["One ", "two ", "three ", "four"], stall_after=2, stall_for=30)
    sent_when_received: list[int] = []
    text = ""
    with (
        api.openai(CLIENT_KEY).chat.completions.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "count"}], stream=True
        ) as stream,
        pytest.raises(openai.APIError),
    ):
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    text += choice.delta.content
                    sent_when_received.append(len(fake_openai.chat_requests[0].sent_at))
    assert text == "One "  # the role chunk, then "One ": the upstream stalled after two events
    (upstream,) = fake_openai.chat_requests
    # The upstream never sent more than those two events (it records each just after sending it, so
    # the relayed piece may arrive before the second is recorded): the client had "One " before the
    # upstream could have finished.
    assert len(sent_when_received) == 1 and sent_when_received[0] <= 2
    assert len(upstream.sent_at) == 2


def test_raw_stream_framing_and_headers(api: InProcessProxy) -> None:
    response = api.client.post(
        "/v1/chat/completions",
        json={"model": "SMALL", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-AI-Proxy-Model"] == "openai/gpt-4o-mini"
    events = [line for line in response.get_data().split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    # the client did not ask for usage: the usage-only chunk the api requested upstream is dropped
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


def test_health_and_ping_need_no_key(api: InProcessProxy) -> None:
    assert api.client.get("/health").json["status"] == "ok"
    ping = api.client.get("/ping")
    assert ping.get_data(as_text=True) == "OK" and ping.headers["X-Request-ID"]


def test_missing_or_wrong_key_is_401(api: InProcessProxy) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {CLIENT_KEY}"}):
        response = api.client.get("/v1/models", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        error = response.json["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert CLIENT_KEY not in response.get_data(as_text=True)
    with pytest.raises(openai.AuthenticationError):
        ask(api.openai("nope"))


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
def test_invalid_bodies_are_400_naming_the_field(api: InProcessProxy, body: dict, param: str) -> None:
    response = api.client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_non_json_and_non_object_bodies(api: InProcessProxy) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    for data in (b"{not json", b"[1, 2]", b""):
        response = api.client.post("/v1/chat/completions", data=data, headers=headers)
        assert response.status_code == 400, data
        assert response.json["error"]["type"] == "invalid_request_error"
        assert "Traceback" not in response.get_data(as_text=True)


def test_body_over_limit_is_413(api: InProcessProxy) -> None:
    big = {"model": "SMALL", "messages": [{"role": "user", "content": "x" * 300_000}]}
    response = api.client.post("/v1/chat/completions", json=big, headers=AUTH)
    assert response.status_code == 413
    assert response.json["error"]["type"] == "invalid_request_error"


def test_unknown_path_and_method_are_openai_errors(api: InProcessProxy) -> None:
    missing = api.client.get("/v1/nothing-here", headers=AUTH)
    assert missing.status_code == 404 and "error" in missing.json
    wrong = api.client.get("/v1/chat/completions", headers=AUTH)
    assert wrong.status_code == 405 and wrong.json["error"]["code"] == "method_not_allowed"


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
    client, fake_openai: FakeOpenAI, kind: str, exception: type, status: int
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


def test_upstream_timeout_is_504_and_drop_is_502(fake_openai: FakeOpenAI, in_process) -> None:
    # read_timeout is short here and the upstream far slower than it: the 504 never depends on load.
    cfg = config_for(fake_openai, http={"read_timeout": 0.3, "stream_idle_timeout": 2, "connect_timeout": 1})
    client = in_process(cfg, env={"AI_PROXY_API_KEYS": CLIENT_KEY}).openai(CLIENT_KEY)
    fake_openai.push_chat(delay=30)
    with pytest.raises(openai.APIStatusError) as info:
        ask(client)
    assert info.value.status_code == 504
    # The drop goes to a proxy with a long read_timeout: on a loaded machine 0.3 s may pass first.
    slow_ok = config_for(fake_openai, http={"read_timeout": 30, "connect_timeout": 5})
    patient = in_process(slow_ok, env={"AI_PROXY_API_KEYS": CLIENT_KEY}).openai(CLIENT_KEY)
    fake_openai.push("chat", Behavior(drop=True))
    with pytest.raises(openai.InternalServerError) as info:
        ask(patient)
    assert info.value.status_code == 502


def test_unreadable_upstream_answer_is_502(client, fake_openai: FakeOpenAI) -> None:
    fake_openai.push(
        "chat", Behavior(body=b"<html>gateway hiccup</html>", headers={"Content-Type": "text/html"})
    )
    with pytest.raises(openai.InternalServerError) as info:
        ask(client)
    assert info.value.status_code == 502


def test_no_secret_or_body_in_logs(api: InProcessProxy, client, fake_openai: FakeOpenAI) -> None:
    secret_text = "my-private-prompt-words"
    client.chat.completions.create(model="SMALL", messages=[{"role": "user", "content": secret_text}])
    fake_openai.push_error("invalid_api_key")
    with pytest.raises(openai.InternalServerError):
        ask(client)
    with pytest.raises(openai.AuthenticationError):
        ask(api.openai("wrong-client-key"))
    log = api.log.text()
    assert "POST /v1/chat/completions 401" in log
    for secret in (UPSTREAM_KEY, CLIENT_KEY, secret_text, "wrong-client-key", "Traceback"):
        assert secret not in log
    assert "POST /v1/chat/completions 200" in log and "served=openai/gpt-4o-mini" in log


@pytest.mark.parametrize("mode", ["split", "strip", "keep"])
def test_think_tags_follow_the_models_reasoning_mode(fake_openai: FakeOpenAI, in_process, mode: str) -> None:
    cfg = config_for(fake_openai)
    cfg["models"][0]["reasoning"] = mode
    client = in_process(cfg, env={"AI_PROXY_API_KEYS": CLIENT_KEY}).openai(CLIENT_KEY)
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
