"""The GigaChat provider against a fake GigaChat (OAuth + v1 chat) over HTTP on 127.0.0.1, in-process."""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest

from app.config import HttpConfig, ModelConfig
from app.errors import (
    InvalidRequest,
    ProxyError,
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
)
from app.http import SessionPool
from app.providers import build_provider
from app.providers.gigachat import GigaChat
from tests.fakes.gigachat import FakeGigaChat
from tests.fakes.server import Behavior
from tests.providers import test_malformed as malformed_table

HTTP = HttpConfig(connect_timeout=2.0, read_timeout=5.0, stream_idle_timeout=5.0)
HI = {"model": "gigachat/GigaChat-2", "messages": [{"role": "user", "content": "Привет"}]}
STATE_ID = "77d3fb14-457a-46ba-937e-8d856156d003"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather_forecast",
        "description": "Возвращает температуру",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "num_days": {"type": "integer", "minimum": 0}},
            "required": ["location"],
        },
    },
}


@pytest.fixture
def fake():
    with FakeGigaChat() as server:
        yield server


@pytest.fixture
def make(fake):
    pools: list[SessionPool] = []

    def build(http: HttpConfig = HTTP, **overrides) -> GigaChat:
        pools.append(SessionPool(http))
        provider = build_provider(fake.model_config(**overrides), pools[-1], http)
        assert isinstance(provider, GigaChat)
        return provider

    yield build
    for pool in pools:
        pool.close()


def bearer(req) -> str:
    return req.headers.get("Authorization", "")


# --- basic calls and the OAuth exchange ----------------------------------------------------------


def test_complete_fetches_a_token_and_calls_the_v1_api(fake, make):
    provider = make()
    answer = provider.complete(HI)
    assert answer.body["choices"][0]["message"]["content"] == "Привет! Чем могу помочь?"
    assert answer.body["usage"]["total_tokens"] == 20
    assert answer.headers["x-request-id"]

    (oauth,) = fake.oauth_requests
    assert oauth.headers["Authorization"] == "Basic " + base64.b64encode(b"cid:secret").decode()
    assert oauth.headers["RqUID"]
    assert oauth.body == b"scope=GIGACHAT_API_PERS"
    (chat,) = fake.chat_requests
    assert bearer(chat) == f"Bearer {fake.issued_tokens[0]}"
    assert chat.json == {"model": "GigaChat-2", "messages": [{"role": "user", "content": "Привет"}]}


def test_an_authorization_key_works_like_the_pair(fake, make):
    provider = make(token=fake.authorization_key)
    assert provider.complete(HI).body["choices"][0]["finish_reason"] == "stop"


def test_scope_is_configurable(make):
    with FakeGigaChat(scope="GIGACHAT_API_CORP") as corp:
        provider = make(url=corp.api_url, auth_url=corp.auth_url, scope="GIGACHAT_API_CORP")
        assert provider.complete(HI).body["choices"]
        assert corp.oauth_requests[0].body == b"scope=GIGACHAT_API_CORP"


def test_the_fake_answers_the_official_sdk():
    """The fake's fidelity, checked with the official client: OAuth, a plain answer and a stream."""
    from gigachat import GigaChat as OfficialClient

    with FakeGigaChat() as fake:
        client = OfficialClient(
            credentials=fake.authorization_key,
            base_url=fake.api_url,
            auth_url=fake.auth_url,
            scope=fake.scope,
            model="GigaChat-2",
            verify_ssl_certs=False,
            access_token="",
            user="",
            password="",
        )
        with client:
            assert client.chat("Привет").choices[0].message.content == fake.reply
            assert [c.choices[0].delta.content for c in client.stream("Привет")] == [*fake.stream_pieces, ""]
        assert len(fake.oauth_requests) == 1


# --- one token, shared by many threads --------------------------------------------------------


def test_one_token_is_fetched_once_for_many_threads(fake, make):
    provider = make()
    start = threading.Barrier(20)

    def call(_):
        start.wait()
        return provider.complete(HI).body["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(call, range(20)))
    assert answers == ["Привет! Чем могу помочь?"] * 20
    assert len(fake.oauth_requests) == 1
    assert {bearer(r) for r in fake.chat_requests} == {f"Bearer {fake.issued_tokens[0]}"}


def test_token_is_refreshed_before_it_expires(fake, make):
    """The expiry comes from the OAuth answer: a token with less than the 60 s margin left is replaced
    at once (the margin itself is tested with an injected clock in test_gigachat.py)."""
    provider = make()
    provider.complete(HI)
    provider.complete(HI)
    assert len(fake.oauth_requests) == 1
    fake.token_ttl = 30.0
    provider.token.reject(fake.issued_tokens[0])
    provider.complete(HI)
    provider.complete(HI)
    assert len(fake.oauth_requests) == 3
    first, second, third = fake.issued_tokens
    assert [bearer(r) for r in fake.chat_requests] == [f"Bearer {t}" for t in (first, first, second, third)]


def test_a_rejected_token_is_refreshed_once_and_the_call_retried(fake, make):
    provider = make()
    provider.complete(HI)
    fake.revoke()
    answer = provider.complete(HI)
    assert answer.body["choices"][0]["message"]["content"]
    assert len(fake.oauth_requests) == 2
    first, second = fake.issued_tokens
    assert [bearer(r) for r in fake.chat_requests] == [f"Bearer {first}"] * 2 + [f"Bearer {second}"]


def test_many_threads_hitting_a_401_together_cause_one_refresh(fake, make):
    """20 requests in flight with the same token all get a (slow) 401: one new token, 20 retries.
    (The SDK's own reset is unconditional: there each late 401 would wipe the fresh token again.)"""
    provider = make()
    provider.complete(HI)
    (first,) = fake.issued_tokens

    def slow_reject(req):
        if bearer(req) == f"Bearer {first}":
            return fake.error(401, "Token has expired", delay=0.3)
        return fake.answer(fake.completion(fake.reply))

    fake.push("chat", *[slow_reject] * 40)
    start = threading.Barrier(20)

    def call(_):
        start.wait()
        return provider.complete(HI).body["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(call, range(20))) == [fake.reply] * 20
    assert len(fake.oauth_requests) == 2
    second = fake.issued_tokens[1]
    sent = [bearer(r) for r in fake.chat_requests]
    assert sent.count(f"Bearer {first}") == 21 and sent.count(f"Bearer {second}") == 20


def test_a_401_after_the_retry_is_an_auth_error(fake, make):
    provider = make()
    provider.complete(HI)
    fake.reject_all_tokens = True
    with pytest.raises(UpstreamAuthError):
        provider.complete(HI)
    assert len(fake.oauth_requests) == 2  # one refresh, then give up
    assert len(fake.chat_requests) == 3


def test_bad_credentials_are_an_auth_error_without_the_secret(fake, make, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make(token="cid:WRONG-secret")
    with pytest.raises(UpstreamAuthError) as info:
        provider.complete(HI)
    with pytest.raises(UpstreamAuthError):
        provider.stream(HI)
    key = base64.b64encode(b"cid:WRONG-secret").decode()
    for text in (str(info.value), info.value.message, caplog.text):
        assert "WRONG-secret" not in text and key not in text
    assert "credentials doesn't match db data" in caplog.text  # the reason is logged for operators
    assert fake.chat_requests == []


def test_a_wrong_scope_is_an_auth_error(fake, make):
    with pytest.raises(UpstreamAuthError):
        make(scope="GIGACHAT_API_B2B").complete(HI)


# --- streaming --------------------------------------------------------------------------------


def test_stream_arrives_incrementally_and_ends_with_usage(fake, make):
    fake.chunk_delay = 0.15
    provider = make()
    stream = provider.stream({**HI, "stream": True})
    got = []
    for chunk in stream:
        got.append((time.monotonic(), chunk))
    stream.close()
    (req,) = fake.chat_requests
    assert req.json["stream"] is True
    assert req.headers["Accept"] == "text/event-stream"
    texts = [c["choices"][0]["delta"].get("content") for _, c in got if c["choices"]]
    assert texts == ["При", "вет", "!", None]
    assert got[0][1]["choices"][0]["delta"]["role"] == "assistant"
    assert got[-2][1]["choices"][0]["finish_reason"] == "stop"
    assert got[-1][1]["choices"] == [] and got[-1][1]["usage"]["total_tokens"] == 20
    # each piece reached us before the fake had written the next one
    assert got[0][0] < req.sent_at[1] and got[1][0] < req.sent_at[2]
    assert stream.headers["x-request-id"]


def test_stream_refreshes_a_rejected_token_too(fake, make):
    provider = make()
    provider.complete(HI)
    fake.revoke()
    chunks = list(provider.stream(HI))
    assert chunks[-1]["usage"]
    assert len(fake.oauth_requests) == 2


def test_stream_errors_raise_from_stream(fake, make):
    provider = make()
    fake.push("chat", fake.error(429, "Too Many Requests", headers={"Retry-After": "3"}))
    with pytest.raises(RateLimited) as info:
        provider.stream(HI)
    assert info.value.retry_after == 3.0
    fake.push("chat", fake.error(500, "Internal Server Error"))
    with pytest.raises(UpstreamError):
        provider.stream(HI)


def test_stream_cut_before_its_end_is_an_error(fake, make):
    provider = make()
    events = fake.stream_events(["a", "b"], done=False)[:-1]  # no finish_reason chunk
    fake.push("chat", fake.sse(events))
    stream = provider.stream(HI)
    with pytest.raises(UpstreamError, match="ended before"):
        list(stream)
    fake.push("chat", fake.sse(fake.stream_events(["a", "b", "c"]), drop_after=1))
    stream = provider.stream(HI)
    with pytest.raises(UpstreamError):
        list(stream)


def test_closing_a_stream_early_closes_the_connection(fake, make):
    provider = make()
    fake.push("chat", fake.sse(fake.stream_events([f"t{i} " for i in range(40)]), chunk_delay=0.05))
    stream = provider.stream(HI)
    first = next(iter(stream))
    assert first["choices"][0]["delta"]["content"] == "t0 "
    stream.close()
    req = fake.chat_requests[0]
    deadline = time.monotonic() + 5
    while not req.client_gone and time.monotonic() < deadline:
        time.sleep(0.05)
    assert req.client_gone
    assert len(req.sent_at) < 40
    # the provider keeps working on fresh connections
    assert provider.complete(HI).body["choices"]


def test_closing_from_another_thread_wakes_a_blocked_read(fake, make):
    """The gateway reads in a pump thread and closes from the request thread when the client leaves."""
    provider = make()
    fake.push("chat", fake.sse(fake.stream_events(["a", "b"]), stall_after=1, stall_for=30))
    stream = provider.stream(HI)
    outcome: list[object] = []

    def pump():
        try:
            outcome.extend(stream)
            outcome.append("end")
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=pump)
    reader.start()
    time.sleep(0.3)
    assert reader.is_alive()  # blocked in the stall
    started = time.monotonic()
    stream.close()
    reader.join(timeout=3)
    assert not reader.is_alive()
    assert time.monotonic() - started < 2
    # ended, quietly or with a typed error that nobody reads (the client has gone): never a raw one
    assert outcome[-1] == "end" or isinstance(outcome[-1], UpstreamError)
    assert provider.complete(HI).body["choices"]


# --- tools ------------------------------------------------------------------------------------


def test_tool_call_round_trip(fake, make):
    provider = make()
    fake.push(
        "chat",
        fake.answer(
            fake.completion(
                function_call={"name": "weather_forecast", "arguments": {"location": "Москва"}},
                state_id=STATE_ID,
            )
        ),
    )
    request = {
        **HI,
        "messages": [{"role": "user", "content": "Какая погода в Москве?"}],
        "tools": [WEATHER_TOOL],
    }
    first = provider.complete(request).body["choices"][0]
    assert first["finish_reason"] == "tool_calls"
    (call,) = first["message"]["tool_calls"]
    assert call == {
        "id": STATE_ID,
        "type": "function",
        "function": {"name": "weather_forecast", "arguments": '{"location":"Москва"}'},
    }
    sent = fake.chat_requests[0].json
    assert sent["function_call"] == "auto"
    assert sent["functions"][0]["parameters"] == WEATHER_TOOL["function"]["parameters"]  # schema verbatim

    fake.push("chat", fake.answer(fake.completion("жарко, +27")))
    follow_up = {
        **request,
        "messages": [
            *request["messages"],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 27}'},
        ],
    }
    second = provider.complete(follow_up).body["choices"][0]
    assert second["message"]["content"] == "жарко, +27"
    assert fake.chat_requests[1].json["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "function_call": {"name": "weather_forecast", "arguments": {"location": "Москва"}},
            "functions_state_id": STATE_ID,
        },
        {"role": "function", "content": '{"temperature": 27}', "name": "weather_forecast"},
    ]


def test_streamed_tool_call(fake, make):
    provider = make()
    fake.push(
        "chat",
        fake.sse(
            fake.stream_events(
                [],
                function_call={"name": "weather_forecast", "arguments": {"location": "Москва"}},
                state_id=STATE_ID,
            )
        ),
    )
    chunks = list(provider.stream({**HI, "tools": [WEATHER_TOOL], "tool_choice": "required"}))
    assert fake.chat_requests[0].json["function_call"] == {"name": "weather_forecast"}
    calls = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls == [
        [
            {
                "index": 0,
                "id": STATE_ID,
                "type": "function",
                "function": {"name": "weather_forecast", "arguments": '{"location":"Москва"}'},
            }
        ]
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


# --- errors and timeouts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,message,error",
    [
        (400, "bad request", UpstreamBadRequest),
        (422, "Requested model does not support functions", UpstreamBadRequest),
        (402, "Payment Required", RateLimited),
        (404, "No such model", UpstreamError),
        (500, "Internal Server Error", UpstreamError),
        (503, "Service Unavailable", UpstreamError),
    ],
)
def test_api_errors(fake, make, status, message, error):
    fake.push("chat", fake.error(status, message))
    with pytest.raises(error) as info:
        make().complete(HI)
    assert type(info.value) is error
    if error is UpstreamBadRequest:
        assert info.value.message == message


def test_rate_limit_carries_retry_after(fake, make):
    fake.push("chat", fake.error(429, "Too Many Requests", headers={"Retry-After": "12"}))
    with pytest.raises(RateLimited) as info:
        make().complete(HI)
    assert info.value.retry_after == 12.0


def test_read_timeout_applies_to_plain_calls(fake, make):
    provider = make(http=HttpConfig(connect_timeout=2.0, read_timeout=1.0, stream_idle_timeout=30.0))
    provider.complete(HI)  # token fetched
    fake.push("chat", fake.answer(fake.completion("late"), delay=20.0))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        provider.complete(HI)
    assert time.monotonic() - started < 10  # the read timeout, not the answer's 20 s delay


def test_streams_use_the_idle_timeout_not_the_read_timeout(fake, make):
    patient = make(http=HttpConfig(connect_timeout=2.0, read_timeout=0.2, stream_idle_timeout=5.0))
    fake.push("chat", fake.sse(fake.stream_events(["a", "b"]), chunk_delay=0.4))
    texts = [c["choices"][0]["delta"].get("content") for c in patient.stream(HI) if c["choices"]]
    assert texts[:2] == ["a", "b"]
    hasty = make(http=HttpConfig(connect_timeout=2.0, read_timeout=30.0, stream_idle_timeout=0.5))
    fake.push("chat", fake.sse(fake.stream_events(["a", "b"]), stall_after=1, stall_for=20))
    stream = hasty.stream(HI)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        list(stream)
    assert time.monotonic() - started < 10  # the idle timeout, not the 20 s stall


def test_connection_refused_is_an_upstream_error(make):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = make(url=f"http://127.0.0.1:{port}/api/v1", auth_url=f"http://127.0.0.1:{port}/api/v2/oauth")
    with pytest.raises(UpstreamError) as info:
        provider.complete(HI)
    assert str(port) not in info.value.message


def test_untranslatable_requests_fail_before_any_call(fake, make):
    with pytest.raises(InvalidRequest):
        make().complete(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
        )
    assert fake.requests == []


def test_model_config_repr_hides_the_token(fake):
    assert "secret" not in repr(fake.model_config()) and "secret" not in repr(ModelConfig)


# --- nothing leaks: credentials and access tokens echoed by the upstream ---------------------------


def leaks(fake: FakeGigaChat, texts: list[str]) -> list[str]:
    """The secrets found in `texts`: the configured pair, the authorization key, any issued token."""
    secrets = ["cid:secret", "secret", fake.authorization_key, *fake.issued_tokens]
    return [s for s in secrets for text in texts if s in text]


def error_texts(exc: BaseException) -> list[str]:
    assert isinstance(exc, ProxyError)  # typed, never a raw exception
    return [str(exc), exc.message, repr(exc), str(exc.to_dict())]


@pytest.mark.parametrize("status", [400, 404, 422, 429, 500, 503])
def test_echoed_tokens_are_redacted_from_plain_errors_and_logs(fake, make, caplog, status):
    caplog.set_level(logging.DEBUG)
    provider = make()
    fake.push("chat", fake.echoing_error(status))
    with pytest.raises(ProxyError) as info:
        provider.complete(HI)
    assert fake.issued_tokens  # the upstream did echo a real token...
    assert leaks(fake, [*error_texts(info.value), caplog.text]) == []
    assert "[redacted]" in info.value.message  # ...and what it said is still there, minus the secret


def test_echoed_tokens_are_redacted_from_401_warnings(fake, make, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make()
    fake.push("chat", fake.echoing_error(401), fake.echoing_error(401))  # the call and its retry
    with pytest.raises(UpstreamAuthError) as info:
        provider.complete(HI)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("[redacted]" in r.getMessage() for r in warnings)
    assert leaks(fake, [*error_texts(info.value), caplog.text]) == []


def test_echoed_tokens_are_redacted_from_stream_errors(fake, make, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make()
    fake.push("chat", fake.echoing_error(500))  # refused when opening
    with pytest.raises(UpstreamError) as opening:
        provider.stream(HI)
    fake.push("chat", fake.echoing_stream_failure())  # an error event after the first chunk
    stream = provider.stream(HI)
    with pytest.raises(UpstreamError) as midway:
        list(stream)
    assert "session of [redacted] lost" in midway.value.message
    assert leaks(fake, [*error_texts(opening.value), *error_texts(midway.value), caplog.text]) == []


@pytest.mark.parametrize(
    "status,error", [(400, UpstreamAuthError), (401, UpstreamAuthError), (500, UpstreamError)]
)
def test_echoed_credentials_are_redacted_from_oauth_errors(fake, make, caplog, status, error):
    caplog.set_level(logging.DEBUG)
    provider = make()
    fake.push("oauth", fake.echoing_error(status))
    with pytest.raises(error) as info:
        provider.complete(HI)
    assert leaks(fake, [*error_texts(info.value), caplog.text]) == []
    assert "[redacted]" in caplog.text or "[redacted]" in info.value.message
    assert fake.chat_requests == []


# --- malformed answers over the wire: a typed, retryable 502 naming the model (and the shared table
# at the end of this file) ---------------------------------------------------------------------------


def assert_typed_502(exc: BaseException) -> None:
    assert type(exc) is UpstreamError, repr(exc)
    assert exc.status == 502 and exc.retryable
    assert "gigachat/GigaChat-2" in exc.message and "Traceback" not in exc.message


def test_an_error_inside_a_200_is_an_upstream_error(fake, make):
    fake.push("chat", fake.answer({"status": 500, "message": "Internal Server Error"}))
    with pytest.raises(ProxyError) as info:
        make().complete(HI)
    assert_typed_502(info.value)
    assert info.value.message.endswith("failed with HTTP 500: Internal Server Error")


def test_a_stream_answered_with_html_is_a_typed_502(fake, make):
    fake.push(
        "chat", Behavior(body=b"<html><h1>502 Bad Gateway</h1></html>", headers={"Content-Type": "text/html"})
    )
    stream = make().stream(HI)
    with pytest.raises(ProxyError) as info:
        list(stream)
    assert_typed_502(info.value)


@pytest.mark.parametrize("body", [b"[]", b"{}", b'{"access_token": 5, "expires_at": 1}', b"<html>", b""])
def test_malformed_oauth_answers_are_typed_502s(fake, make, body):
    fake.push("oauth", Behavior(body=body, headers={"Content-Type": "application/json"}))
    with pytest.raises(ProxyError) as info:
        make().complete(HI)
    assert_typed_502(info.value)
    assert fake.chat_requests == []


def test_oauth_rate_limit_is_retryable(fake, make):
    fake.push("oauth", fake.error(429, "Too Many Requests", headers={"Retry-After": "4"}))
    with pytest.raises(RateLimited) as info:
        make().complete(HI)
    assert info.value.retry_after == 4.0


# --- TLS --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verify", [False, "/etc/ssl/certs/ca.pem"])
def test_verify_ssl_certs_picks_the_session(fake, verify):
    sessions = SessionPool(HTTP)
    try:
        provider = GigaChat(fake.model_config(verify_ssl_certs=verify), sessions, HTTP)
        assert provider.transport is sessions.transport("gigachat", verify)
        assert provider.transport.session.verify == verify
        default = GigaChat(fake.model_config(verify_ssl_certs=True), sessions, HttpConfig(verify=False))
        assert default.transport is sessions.transport("gigachat")  # the global `http.verify`
    finally:
        sessions.close()


def test_every_key_of_a_pool_is_redacted(fake, make):
    other = "cid2:other-secret"
    provider = make(keys=(fake.model_config().token, other))
    encoded = base64.b64encode(other.encode()).decode()
    fake.push("chat", fake.error(400, f"not {other} nor {encoded}"))
    with pytest.raises(UpstreamBadRequest) as info:
        provider.complete(HI)
    assert info.value.message == "not [redacted] nor [redacted]"


# --- the shared malformed-answer table (tests/providers/test_malformed.py), for GigaChat -----------

TEXT_EVENTS = [
    {"choices": [{"delta": {"content": "a", "role": "assistant"}, "index": 0}], "created": 1, "model": "G"},
    {
        "choices": [{"delta": {"content": ""}, "index": 0, "finish_reason": "stop"}],
        "created": 1,
        "model": "G",
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
            "precached_prompt_tokens": 0,
        },
    },
]
CALL_EVENTS = [
    {
        "choices": [
            {
                "delta": {
                    "content": "",
                    "role": "assistant",
                    "function_call": {"name": "weather_forecast", "arguments": {"location": "Москва"}},
                    "functions_state_id": STATE_ID,
                },
                "index": 0,
                "finish_reason": "function_call",
            }
        ],
        "created": 1,
        "model": "G",
    }
]
CALL_ANSWER = FakeGigaChat.completion(function_call={"name": "f", "arguments": {"a": [1]}}, state_id=STATE_ID)


def plain_table():
    yield from (pytest.param(body, id=name) for name, body in malformed_table.GENERIC.items())
    for n, answer in enumerate([FakeGigaChat.completion("hi"), CALL_ANSWER]):
        for name, bad in malformed_table.mutations(answer):
            yield pytest.param(orjson.dumps(bad), id=f"{n}-{name}")


def stream_table():
    done = b"data: [DONE]\n\n"
    for name, body in malformed_table.STREAM_GENERIC.items():
        yield pytest.param(
            [b"data: " + body + b"\n\n", *map(malformed_table.sse, TEXT_EVENTS), done], id=name
        )
    for n, events in enumerate([TEXT_EVENTS, CALL_EVENTS]):
        for name, bad in malformed_table.mutations(events):
            yield pytest.param([*map(malformed_table.sse, bad), done], id=f"{n}-{name}")


@pytest.fixture(scope="module")
def shared():
    with FakeGigaChat() as server:
        sessions = SessionPool(HTTP)
        yield server, GigaChat(server.model_config(), sessions, HTTP)
        sessions.close()


@pytest.mark.parametrize("body", list(plain_table()))
def test_shared_table_plain(shared, body):
    server, provider = shared
    server.push("chat", Behavior(body=body, headers={"Content-Type": "application/json"}))
    try:
        malformed_table.check_body(provider.complete(HI).body, streamed=False)
    except UpstreamError as exc:
        malformed_table.check_error(exc, provider.model)


@pytest.mark.parametrize("events", list(stream_table()))
def test_shared_table_stream(shared, events):
    server, provider = shared
    server.push("chat", Behavior(events=events))
    stream = provider.stream(HI)
    try:
        for chunk in stream:
            malformed_table.check_body(chunk, streamed=True)
    except UpstreamError as exc:
        malformed_table.check_error(exc, provider.model)
    finally:
        stream.close()
