"""Self-tests of the fake upstreams, using `requests` and the official `openai` SDK."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator

import openai
import pytest
import requests

from tests.fakes.openai import (
    ERROR_STATUS,
    TINY_PNG,
    FakeOpenAI,
    chat_completion,
    error_body,
    error_response,
    go_duration,
    stream_events,
    tool_call,
)
from tests.fakes.server import Behavior, FakeServer, sse
from tests.harness import openai_client

KEY = "sk-fake-upstream-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "Say hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


def sdk(fake: FakeOpenAI, **kwargs: object) -> openai.OpenAI:
    return openai_client(fake, api_key=KEY, **kwargs)


def data_events(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, comments skipped."""
    return [e.removeprefix("data: ") for e in raw.decode().split("\n\n") if e.startswith("data: ")]


# -- chat ----------------------------------------------------------------------------------------


def test_chat_non_stream_with_requests(fake_openai: FakeOpenAI) -> None:
    r = requests.post(
        fake_openai.chat_url, json={"model": "my-model", "messages": HI}, headers=AUTH, timeout=5
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "my-model"
    assert body["choices"][0]["message"]["content"] == "Hello!"
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert r.headers["x-ratelimit-remaining-requests"] == "9999"
    assert r.headers["x-ratelimit-reset-tokens"] == "6ms"
    assert r.headers["x-request-id"].startswith("req_")
    [req] = fake_openai.chat_requests
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.json == {"model": "my-model", "messages": HI}


def test_chat_with_sdk(fake_openai: FakeOpenAI) -> None:
    fake_openai.push_chat(content="Bonjour", prompt_tokens=7)
    answer = sdk(fake_openai).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert answer.choices[0].message.content == "Bonjour"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens == 7
    # the script is used once, then the default answers again
    assert (
        sdk(fake_openai).chat.completions.create(model="m", messages=HI).choices[0].message.content
        == "Hello!"
    )


def test_stream_reaches_client_incrementally(fake_openai: FakeOpenAI) -> None:
    fake_openai.push_chat(content=["Hel", "lo"], chunk_delay=0.2)
    stream = sdk(fake_openai).chat.completions.create(
        model="m", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    received, texts, usage = [], [], None
    for chunk in stream:
        received.append(time.monotonic())
        texts += [c.delta.content for c in chunk.choices if c.delta.content]
        usage = usage or chunk.usage
    [req] = fake_openai.chat_requests
    assert texts == ["Hel", "lo"]
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + 2
    # role, 2 contents, finish, usage, [DONE]: the fake records [DONE] just after sending it
    deadline = time.monotonic() + 10
    while len(req.sent_at) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(req.sent_at) == 6
    assert received[0] < req.sent_at[-1] - 0.5


def test_stream_wire_format_matches_openai() -> None:
    events = stream_events("gpt-4o-mini", "Hello!", include_usage=True)
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") and e.count(b"\n\n") == 1 for e in events)
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert events[-1] == b"data: [DONE]\n\n"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 11
    assert all(c["usage"] is None and c["obfuscation"] for c in chunks[:-1])
    assert len(stream_events(include_usage=False)) == len(events) - 1
    assert b"obfuscation" not in b"".join(stream_events(obfuscation=False))


def test_stream_honours_include_obfuscation_false(fake_openai: FakeOpenAI) -> None:
    body = {"model": "m", "messages": HI, "stream": True, "stream_options": {"include_obfuscation": False}}
    r = requests.post(fake_openai.chat_url, json=body, headers=AUTH, timeout=5)
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["transfer-encoding"] == "chunked"
    assert "obfuscation" not in r.text and '"usage":null' in r.text
    assert data_events(r.content)[-1] == "[DONE]"


# -- tool calls ----------------------------------------------------------------------------------


def test_tool_calls_non_stream(fake_openai: FakeOpenAI) -> None:
    fake_openai.push_chat(tool_calls=[tool_call("get_weather", {"location": "Paris"}, id="call_1")])
    answer = sdk(fake_openai).chat.completions.create(model="m", messages=HI, tools=[WEATHER_TOOL])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert (call.id, call.function.name) == ("call_1", "get_weather")
    assert json.loads(call.function.arguments) == {"location": "Paris"}


def test_tool_calls_stream_deltas(fake_openai: FakeOpenAI) -> None:
    calls = [tool_call("get_weather", {"location": "Paris"}), tool_call("get_time")]
    fake_openai.push_chat(tool_calls=calls)
    stream = sdk(fake_openai).chat.completions.create(model="m", messages=HI, stream=True)
    args: dict[int, str] = {}
    names: dict[int, str] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                if d.function and d.function.name:
                    names[d.index] = d.function.name
                args[d.index] = args.get(d.index, "") + ((d.function and d.function.arguments) or "")
    assert names == {0: "get_weather", 1: "get_time"}
    assert json.loads(args[0]) == {"location": "Paris"} and args[1] == "{}"
    assert finish == "tool_calls"


def test_auto_tool_calls_only_when_request_has_tools() -> None:
    with FakeOpenAI(api_key=None, auto_tool_calls=True) as fake:
        client = sdk(fake)
        answer = client.chat.completions.create(model="m", messages=HI, tools=[WEATHER_TOOL])
        assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
        assert client.chat.completions.create(model="m", messages=HI).choices[0].message.content == "Hello!"


# -- errors --------------------------------------------------------------------------------------

SDK_ERRORS = [
    ("invalid_request", openai.BadRequestError),
    ("forbidden", openai.PermissionDeniedError),
    ("model_not_found", openai.NotFoundError),
    ("rate_limit", openai.RateLimitError),
    ("insufficient_quota", openai.RateLimitError),
    ("server_error", openai.InternalServerError),
    ("bad_gateway", openai.InternalServerError),
    ("overloaded", openai.InternalServerError),
]


@pytest.mark.parametrize(("kind", "exc"), SDK_ERRORS)
def test_error_raises_sdk_exception(fake_openai: FakeOpenAI, kind: str, exc: type[Exception]) -> None:
    fake_openai.push_error(kind, model="m")  # type: ignore[arg-type]
    with pytest.raises(exc) as info:
        sdk(fake_openai).chat.completions.create(model="m", messages=HI)
    err = info.value
    assert isinstance(err, openai.APIStatusError)
    assert err.status_code == ERROR_STATUS[kind]
    assert err.body == error_body(kind, model="m")["error"]  # type: ignore[arg-type]


def test_rate_limit_headers_and_body() -> None:
    answer = error_response("rate_limit", retry_after=3, model="gpt-4o")
    assert answer.status == 429
    assert answer.headers["retry-after"] == "3"
    assert answer.headers["x-ratelimit-remaining-requests"] == "0"
    assert answer.headers["x-ratelimit-reset-requests"] == "3s"
    assert answer.json["error"]["code"] == "rate_limit_exceeded"
    assert "gpt-4o" in answer.json["error"]["message"] and "in 3s" in answer.json["error"]["message"]
    quota = error_body("insufficient_quota")["error"]
    assert (quota["type"], quota["code"], quota["param"]) == (
        "insufficient_quota",
        "insufficient_quota",
        None,
    )


def test_wrong_or_missing_key_is_401(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        openai_client(fake_openai, api_key="sk-wrong-key-1234567890abcd").models.list()
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong***************abcd" in info.value.message
    r = requests.post(fake_openai.chat_url, json={"model": "m", "messages": HI}, timeout=5)
    assert r.status_code == 401 and r.json()["error"]["message"].startswith("You didn't provide an API key")
    fake_openai.push_chat(content="scripted answers wait for a valid key")
    assert len(fake_openai.routes["chat"].script) == 1


def test_invalid_chat_body_is_400(fake_openai: FakeOpenAI) -> None:
    r = requests.post(fake_openai.chat_url, json={"model": "m", "messages": []}, headers=AUTH, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_error_builders_cover_every_flavor() -> None:
    for kind in ERROR_STATUS:
        for flavor in ("openai", "groq", "openrouter"):
            try:
                body = error_body(kind, flavor=flavor)  # type: ignore[arg-type]
            except ValueError:
                continue
            assert body["error"]["message"]
            if flavor == "openrouter":
                assert body["error"]["code"] == ERROR_STATUS[kind]
            else:
                assert isinstance(body["error"]["type"], str)
                assert ("param" in body["error"]) == (flavor == "openai")


# -- faults --------------------------------------------------------------------------------------


def test_drop_is_a_connection_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.push("chat", Behavior(drop=True))
    with pytest.raises(openai.APIConnectionError):
        sdk(fake_openai).chat.completions.create(model="m", messages=HI)


def test_drop_after_cuts_the_stream(fake_openai: FakeOpenAI) -> None:
    fake_openai.push_chat(content="one two three", drop_after=2)
    body = {"model": "m", "messages": HI, "stream": True}
    with requests.post(fake_openai.chat_url, json=body, headers=AUTH, stream=True, timeout=5) as r:
        got = []
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for line in r.iter_lines():
                got.append(line)
    assert len([x for x in got if x.startswith(b"data: ")]) == 2


def test_delay_triggers_sdk_timeout(fake_openai: FakeOpenAI) -> None:
    fake_openai.push_chat(delay=2.0)
    with pytest.raises(openai.APITimeoutError):
        sdk(fake_openai, timeout=0.3).chat.completions.create(model="m", messages=HI)


def test_stall_holds_the_stream_and_stop_ends_it_promptly() -> None:
    fake = FakeOpenAI(api_key=None).start()
    fake.push_chat(stall_after=1)
    body = {"model": "m", "messages": HI, "stream": True}
    r = requests.post(fake.chat_url, json=body, stream=True, timeout=(1, 0.3))
    lines = (line for line in r.iter_lines() if line)
    assert next(lines).startswith(b"data: ")
    with pytest.raises(requests.exceptions.ConnectionError):  # read timeout, wrapped by requests
        next(lines)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.0
    assert len(fake.requests[0].sent_at) == 1
    r.close()


def test_client_gone_is_recorded(fake_openai: FakeOpenAI) -> None:
    fake_openai.push_chat(content=" ".join(["word"] * 40), chunk_delay=0.02)
    body = {"model": "m", "messages": HI, "stream": True}
    r = requests.post(fake_openai.chat_url, json=body, headers=AUTH, stream=True, timeout=5)
    next(r.iter_lines())
    r.close()
    deadline = time.monotonic() + 3
    while not fake_openai.requests[0].client_gone and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_openai.requests[0].client_gone


# -- flavors -------------------------------------------------------------------------------------


def test_groq_flavor() -> None:
    with FakeOpenAI("gsk_test", flavor="groq") as fake:
        assert fake.chat_url.endswith("/openai/v1/chat/completions")
        client = openai_client(fake, api_key="gsk_test")
        answer = client.chat.completions.create(model="llama-3.1-8b-instant", messages=HI)
        assert answer.model_extra and answer.model_extra["x_groq"]["id"].startswith("req_")
        assert answer.usage is not None and answer.usage.model_extra["queue_time"] > 0  # type: ignore[index]
        chunks = list(client.chat.completions.create(model="m", messages=HI, stream=True))
        assert chunks[0].model_extra["x_groq"]["id"]  # type: ignore[index]
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].model_extra["x_groq"]["usage"]["total_tokens"] > 0  # type: ignore[index]
        r = requests.post(fake.chat_url, json={"model": "m", "messages": HI}, timeout=5)
        assert r.json() == {
            "error": {
                "message": "Invalid API Key",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        }
        ok = client.chat.completions.with_raw_response.create(model="m", messages=HI)
        assert ok.headers["x-ratelimit-limit-requests"] == "14400"


def test_openrouter_flavor_stream_and_errors() -> None:
    with FakeOpenAI("sk-or-v1-test", flavor="openrouter") as fake:
        client = openai_client(fake, api_key="sk-or-v1-test")
        chunks = list(client.chat.completions.create(model="openai/gpt-4o-mini", messages=HI, stream=True))
        assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.model_extra["cost"] > 0  # type: ignore[index]
        fake.push_chat()
        auth = {"Authorization": "Bearer sk-or-v1-test"}
        raw = requests.post(
            fake.chat_url, json={"model": "m", "messages": HI, "stream": True}, headers=auth, timeout=5
        ).content
        assert raw.startswith(b": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\ndata: {")

        fake.push_chat(content="one two three", error_after=1)
        with pytest.raises(openai.APIError, match="Provider disconnected"):
            list(client.chat.completions.create(model="m", messages=HI, stream=True))

        fake.push_error("rate_limit")
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="m", messages=HI)
        assert info.value.body["metadata"]["headers"]["X-RateLimit-Remaining"] == "0"  # type: ignore[index]
        assert info.value.response.headers["x-ratelimit-reset"] == "1741305600000"
        assert error_body("rate_limit", flavor="openrouter")["user_id"].startswith("user_")


def test_openrouter_mid_stream_error_event_is_the_documented_one() -> None:
    events = stream_events("m", "a b", flavor="openrouter", error_after=1, processing_comments=0)
    last = json.loads(events[-1][6:])
    assert last["error"]["code"] == "server_error"
    assert last["choices"][0]["finish_reason"] == "error"
    assert b"[DONE]" not in b"".join(events)


def test_non_stream_builders_by_flavor() -> None:
    assert chat_completion(flavor="groq")["x_groq"]["id"] == "req_fake000001"
    router = chat_completion(flavor="openrouter")
    assert router["id"].startswith("gen-") and router["choices"][0]["native_finish_reason"] == "stop"
    assert (
        chat_completion(tool_calls=[tool_call("f")])["choices"][0]["message"]["tool_calls"][0]["id"]
        == "call_fake0"
    )


# -- images and models ---------------------------------------------------------------------------


def test_images_b64_and_url(fake_openai: FakeOpenAI) -> None:
    client = sdk(fake_openai)
    b64 = client.images.generate(model="dall-e-3", prompt="fox", response_format="b64_json")
    assert base64.b64decode(b64.data[0].b64_json or "") == TINY_PNG
    assert TINY_PNG.startswith(b"\x89PNG\r\n\x1a\n")
    url = client.images.generate(model="dall-e-3", prompt="fox").data[0].url or ""
    assert url.startswith(fake_openai.url)
    assert requests.get(url, timeout=5).content == TINY_PNG
    gpt_image = client.images.generate(model="gpt-image-1", prompt="fox")
    assert gpt_image.data[0].b64_json and gpt_image.usage is not None


def test_models_list(fake_openai: FakeOpenAI) -> None:
    ids = [m.id for m in sdk(fake_openai).models.list()]
    assert "gpt-4o-mini" in ids


# -- the generic base ----------------------------------------------------------------------------


@pytest.fixture
def base_server() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


def test_regex_routes_query_params_and_scripts(base_server: FakeServer) -> None:
    pattern = re.compile(r"/v1beta/models/(?P<model>[^/:]+):streamGenerateContent")
    base_server.add_route(
        "stream", "POST", pattern, lambda req: Behavior(events=[sse({"model": req.params["model"]})])
    )
    base_server.push("stream", Behavior(status=503, json={"error": "busy"}))
    url = f"{base_server.url}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=k"
    assert requests.post(url, json={}, timeout=5).status_code == 503
    r = requests.post(url, json={"contents": []}, timeout=5)
    assert r.text == 'data: {"model":"gemini-2.0-flash"}\n\n'
    _, second = base_server.requests_for("stream")
    assert second.query == {"alt": "sse", "key": "k"} and second.params == {"model": "gemini-2.0-flash"}
    assert second.json == {"contents": []} and second.headers["CONTENT-TYPE"] == "application/json"
    assert requests.get(f"{base_server.url}/nowhere", timeout=5).status_code == 404


def test_keep_alive_and_chunked_request_body(base_server: FakeServer) -> None:
    base_server.add_route("echo", "*", "/echo", lambda req: Behavior(body=req.body))
    with requests.Session() as session:
        for _ in range(3):
            r = session.post(f"{base_server.url}/echo", data=iter([b"ab", b"cd"]), timeout=5)
            assert r.content == b"abcd"
    recorded = base_server.requests
    assert [r.headers.get("transfer-encoding") for r in recorded] == ["chunked"] * 3
    assert len({r.client_port for r in recorded}) == 1  # one kept-alive connection


def test_wait_for_requests(base_server: FakeServer) -> None:
    base_server.add_route("any", "*", "/", Behavior(status=204))
    threading.Timer(0.05, requests.get, args=(f"{base_server.url}/x",), kwargs={"timeout": 5}).start()
    assert base_server.wait_for_requests(1, timeout=2)[0].path == "/x"
    with pytest.raises(TimeoutError):
        base_server.wait_for_requests(2, timeout=0.05)
    with pytest.raises(TimeoutError):
        base_server.wait_for_requests(1, timeout=0.05, route="other")


def test_go_duration() -> None:
    assert [go_duration(s) for s in (0.006, 1, 8.64, 179.56, 360, 3725)] == [
        "6ms",
        "1s",
        "8.64s",
        "2m59.56s",
        "6m0s",
        "1h2m5s",
    ]


def test_failing_responder_answers_500(base_server: FakeServer) -> None:
    base_server.add_route("bad", "GET", "/", lambda req: 1 / 0)  # type: ignore[arg-type,return-value]
    r = requests.get(f"{base_server.url}/bad", timeout=5)
    assert r.status_code == 500 and "ZeroDivisionError" in r.json()["traceback"]
