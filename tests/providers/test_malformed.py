"""Every HTTP adapter, plain and streamed, fed a table of malformed answers by a real server on 127.0.0.1.

The outcome is always typed: an UpstreamError (502, retryable, naming the model, never quoting the body)
or, where the input is legitimately acceptable (a null optional field, say), a valid OpenAI answer. Any
other exception (AttributeError, KeyError, ...) would be a 500 for the client and fails the test.

Besides the generic rows (JSON list, scalar, `{}`, truncated JSON, invalid UTF-8, HTML, an empty body,
10 MB), every field of a valid answer or event, at any depth, is replaced in turn by values of each other
JSON type: that covers every field an adapter reads.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import HttpConfig, ModelConfig
from app.errors import UpstreamError
from app.http import SessionPool
from app.providers import Provider, build_provider
from tests.fakes.images import TINY_JPEG
from tests.fakes.openai import TINY_PNG
from tests.fakes.server import Behavior, FakeServer

HTTP = HttpConfig(connect_timeout=2, read_timeout=5, stream_idle_timeout=5)
CANARY = "CANARY-7f3a1"
BIG = 10 * 1024 * 1024
CHAT = {"messages": [{"role": "user", "content": "Hi"}]}

GENERIC = {
    "json list": b"[1, 2]",
    "json scalar": b"5",
    "json string": json.dumps(CANARY).encode(),
    "json null": b"null",
    "empty object": b"{}",
    "truncated json": b'{"choices": [{"message": {"content": "' + CANARY.encode(),
    "invalid utf-8": b'{"choices": "\xff\xfe\xfd"}',
    "html": f"<!doctype html><html><body>502 Bad Gateway {CANARY}</body></html>".encode(),
    "empty body": b"",
    "10 MB json": b'{"pad": "' + b"a" * BIG + CANARY.encode() + b'"}',
    "10 MB garbage": b"\x00\x01" * (BIG // 2),
}
# streams: a 2 MB event instead of 10 MB ones (over the 1 MiB SSE line cap, and fast to read)
STREAM_GENERIC = {k: v for k, v in GENERIC.items() if not k.startswith("10 MB")} | {
    "2 MB event": b'{"choices": "' + b"a" * (2 * 1024 * 1024) + CANARY.encode() + b'"}'
}
# each value stands for a JSON type; a field is replaced by those of another type than its own
WRONG = (None, 5, True, CANARY, [1], {"k": CANARY})

# --- valid answers and streams, per adapter -------------------------------------------------------

OPENAI_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "hi",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


OPENAI_STREAM = [
    _chunk({"role": "assistant", "content": "hi"}),
    _chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
    _chunk({}, "tool_calls"),
    {**_chunk({}), "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
]

GEMINI_ANSWER = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "hi"},
                    {"text": "hm", "thought": True},
                    {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "sig"},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 1,
        "candidatesTokenCount": 2,
        "thoughtsTokenCount": 1,
        "cachedContentTokenCount": 1,
        "totalTokenCount": 4,
    },
    "modelVersion": "gemini-x",
    "responseId": "r1",
}
GEMINI_STREAM = [
    {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "index": 0}],
        "responseId": "r1",
    },
    GEMINI_ANSWER,
]

COHERE_ANSWER = {
    "id": "c1",
    "finish_reason": "TOOL_CALL",
    "message": {
        "role": "assistant",
        "content": [{"type": "text", "text": "hi"}, {"type": "thinking", "thinking": "hm"}],
        "tool_plan": "plan",
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    },
    "usage": {
        "billed_units": {"input_tokens": 1, "output_tokens": 2},
        "tokens": {"input_tokens": 1, "output_tokens": 2},
    },
}
COHERE_STREAM = [
    {"type": "message-start", "id": "c1", "delta": {"message": {"role": "assistant"}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "hi"}}}},
    {"type": "content-delta", "index": 1, "delta": {"message": {"content": {"thinking": "hm"}}}},
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "plan"}}},
    {
        "type": "tool-call-start",
        "index": 0,
        "delta": {
            "message": {
                "tool_calls": {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}
            }
        },
    },
    {
        "type": "tool-call-delta",
        "index": 0,
        "delta": {"message": {"tool_calls": {"function": {"arguments": "{}"}}}},
    },
    {"type": "tool-call-end", "index": 0},
    {
        "type": "message-end",
        "delta": {"finish_reason": "TOOL_CALL", "usage": {"tokens": {"input_tokens": 1, "output_tokens": 2}}},
    },
]

CLOUDFLARE_ANSWER = {
    "result": {
        "response": "hi",
        "tool_calls": [{"name": "f", "arguments": {"a": 1}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    },
    "success": True,
    "errors": [],
    "messages": [],
}
CLOUDFLARE_OPENAI_ANSWER = {"result": OPENAI_ANSWER, "success": True, "errors": [], "messages": []}
CLOUDFLARE_STREAM = [
    {"response": "hi"},
    {"response": "", "tool_calls": [{"name": "f", "arguments": {"a": 1}}]},
    {"response": "", "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
]
CLOUDFLARE_OPENAI_STREAM = OPENAI_STREAM[:4]

IMAGES_OPENAI_ANSWER = {
    "created": 1,
    "data": [{"b64_json": base64.b64encode(TINY_PNG).decode(), "revised_prompt": "r"}],
}
IMAGES_CLOUDFLARE_ANSWER = {"result": {"image": base64.b64encode(TINY_JPEG).decode()}, "success": True}

# adapter -> (provider, URL path, upstream model, kind)
ADAPTERS = {
    "openai": ("openai", "/v1/chat/completions", "gpt-x", "chat"),
    "gemini": ("gemini", "/v1beta/models", "gemini-x", "chat"),
    "cohere": ("cohere", "/v2/chat", "command-x", "chat"),
    "cloudflare": ("cloudflare", "/client/v4/accounts/a/ai/run", "@cf/meta/llama", "chat"),
    "images-openai": ("openai", "/v1/images/generations", "dall-e-3", "image"),
    "images-cloudflare": ("cloudflare", "/client/v4/accounts/a/ai/run", "@cf/flux", "image"),
    "images-raw": ("openai", "/hf-inference/models/sdxl", "sdxl", "image"),
}
# adapter -> its valid answers and streams (a list of events), which the mutations start from
ANSWERS: dict[str, list[Any]] = {
    "openai": [OPENAI_ANSWER],
    "gemini": [GEMINI_ANSWER],
    "cohere": [COHERE_ANSWER],
    "cloudflare": [CLOUDFLARE_ANSWER, CLOUDFLARE_OPENAI_ANSWER],
    "images-openai": [IMAGES_OPENAI_ANSWER],
    "images-cloudflare": [IMAGES_CLOUDFLARE_ANSWER],
    "images-raw": [],
}
STREAMS: dict[str, list[list[Any]]] = {
    "openai": [OPENAI_STREAM],
    "gemini": [GEMINI_STREAM],
    "cohere": [COHERE_STREAM],
    "cloudflare": [CLOUDFLARE_STREAM, CLOUDFLARE_OPENAI_STREAM],
}
# what follows the events of a stream in each wire format
STREAM_END = {
    "openai": [b"data: [DONE]\n\n"],
    "cloudflare": [b"data: [DONE]\n\n"],
    "gemini": [],
    "cohere": [],
}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index path inside a JSON value."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(value)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return out


def mutations(value: Any) -> Iterator[tuple[str, Any]]:
    """(id, value) with one field replaced by a value of another JSON type, for every field."""
    for path in paths(value):
        original = value
        for key in path:
            original = original[key]
        for wrong in WRONG:
            if type(wrong) is not type(original):
                yield f"{'.'.join(map(str, path))}={type(wrong).__name__}", replaced(value, path, wrong)


def sse(event: Any) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def plain_cases() -> Iterator[Any]:
    for adapter in ADAPTERS:
        for name, body in GENERIC.items():
            yield pytest.param(adapter, body, id=f"{adapter}-{name}")
        for n, answer in enumerate(ANSWERS[adapter]):
            yield pytest.param(adapter, json.dumps(answer).encode(), id=f"{adapter}-{n}-valid")
            for name, bad in mutations(answer):
                yield pytest.param(adapter, json.dumps(bad).encode(), id=f"{adapter}-{n}-{name}")


def stream_cases() -> Iterator[Any]:
    for adapter, streams in STREAMS.items():
        end = STREAM_END[adapter]
        for name, body in STREAM_GENERIC.items():
            # the bad bytes as an event of their own, then the rest of a valid stream
            yield pytest.param(
                adapter, [b"data: " + body + b"\n\n", *map(sse, streams[0]), *end], id=f"{adapter}-{name}"
            )
            yield pytest.param(adapter, [body] if body else [], id=f"{adapter}-{name}-raw")
        for n, events in enumerate(streams):
            yield pytest.param(adapter, [*map(sse, events), *end], id=f"{adapter}-{n}-valid")
            for name, bad in mutations(events):
                yield pytest.param(adapter, [*map(sse, bad), *end], id=f"{adapter}-{n}-{name}")


# --- independent checks of what a client gets ------------------------------------------------------


def check_type(value: Any, kind: type | tuple[type, ...], optional: bool = True) -> None:
    if value is None and optional:
        return
    assert isinstance(value, kind) and not isinstance(value, bool), f"{value!r} is not {kind}"


def check_message(message: Any, streamed: bool) -> None:
    assert isinstance(message, dict)
    check_type(message.get("role"), str)
    check_type(message.get("content"), str)
    check_type(message.get("reasoning_content"), str)
    calls = message.get("tool_calls")
    check_type(calls, list)
    for call in calls or ():
        assert isinstance(call, dict)
        if streamed:
            check_type(call.get("index"), int, optional=False)
        check_type(call.get("id"), str, optional=streamed)
        function = call.get("function")
        check_type(function, dict, optional=streamed)
        for field in ("name", "arguments"):
            check_type((function or {}).get(field), str, optional=streamed)


def check_body(body: Any, streamed: bool) -> None:
    assert isinstance(body, dict)
    check_type(body.get("id"), str)
    check_type(body.get("model"), str)
    check_type(body.get("created"), int)
    choices = body.get("choices")
    assert isinstance(choices, list) and (choices or streamed)
    for choice in choices:
        assert isinstance(choice, dict)
        check_type(choice.get("index"), int)
        check_type(choice.get("finish_reason"), str)
        check_message(choice.get("delta" if streamed else "message"), streamed)
    usage = body.get("usage")
    check_type(usage, dict)
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        check_type((usage or {}).get(field), int)


def check_error(error: UpstreamError, model: ModelConfig) -> None:
    assert error.status == 502 and error.retryable
    assert model.name in error.message
    assert CANARY not in error.message


# --- the adapters over HTTP ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with FakeServer() as server:
        server.add_route("any", "*", lambda path: True, Behavior(status=500))
        yield server


@pytest.fixture(scope="module")
def providers(upstream: FakeServer) -> Iterator[dict[str, Provider]]:
    sessions = SessionPool(HTTP)
    built = {}
    for adapter, (provider, path, upstream_model, kind) in ADAPTERS.items():
        model = ModelConfig(
            name=f"{adapter}/test-model",
            provider=provider,
            url=upstream.url + path,
            upstream_model=upstream_model,
            token="tok",
            kind=kind,
        )
        built[adapter] = build_provider(model, sessions, HTTP)
    yield built
    sessions.close()


@pytest.mark.parametrize(("adapter", "body"), list(plain_cases()))
def test_plain_answer(
    upstream: FakeServer, providers: dict[str, Provider], adapter: str, body: bytes
) -> None:
    upstream.push("any", Behavior(body=body, headers={"Content-Type": "application/json"}))
    provider = providers[adapter]
    try:
        if ADAPTERS[adapter][3] == "image":
            result = provider.generate_image({"prompt": "a cat"})
            assert result.images and all(isinstance(i.data, bytes) and i.data for i in result.images)
        else:
            check_body(provider.complete(dict(CHAT)).body, streamed=False)
    except UpstreamError as exc:
        check_error(exc, provider.model)


@pytest.mark.parametrize(("adapter", "events"), list(stream_cases()))
def test_stream(
    upstream: FakeServer, providers: dict[str, Provider], adapter: str, events: list[bytes]
) -> None:
    upstream.push("any", Behavior(events=events))
    provider = providers[adapter]
    stream = provider.stream({**CHAT, "stream": True})
    try:
        chunks = list(stream)
    except UpstreamError as exc:
        check_error(exc, provider.model)
    else:
        assert chunks
        for chunk in chunks:
            check_body(chunk, streamed=True)
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("adapter", "answer"),
    [
        ("openai", {"choices": [{"message": "x"}]}),
        ("openai", {"choices": []}),
        ("openai", {"error": ["boom"]}),
        ("gemini", {"candidates": [{"content": {"parts": [{"text": 5}]}}]}),
        ("cohere", {"message": {"content": [{"type": "text", "text": ["x"]}]}}),
        ("cohere", {"message": "nope"}),
        ("cloudflare", {"result": "text"}),
        ("cloudflare", {"success": True}),
        ("cloudflare", {"result": {"choices": [{"message": "x"}]}}),
        ("images-openai", {"data": [{"b64_json": 5}]}),
        ("images-cloudflare", {"result": ["x"]}),
    ],
)
def test_known_malformed_answers_are_upstream_errors(
    upstream: FakeServer, providers: dict[str, Provider], adapter: str, answer: Any
) -> None:
    """Rows where only an error is right (the table above also accepts a valid answer)."""
    upstream.push("any", Behavior(json=answer))
    provider = providers[adapter]
    with pytest.raises(UpstreamError) as info:
        if ADAPTERS[adapter][3] == "image":
            provider.generate_image({"prompt": "a cat"})
        else:
            provider.complete(dict(CHAT))
    check_error(info.value, provider.model)


def test_the_error_says_which_field_was_wrong(upstream: FakeServer, providers: dict[str, Provider]) -> None:
    upstream.push("any", Behavior(json={"choices": [{"message": CANARY}]}))
    with pytest.raises(UpstreamError) as info:
        providers["openai"].complete(dict(CHAT))
    assert (
        info.value.message
        == "Upstream for model openai/test-model sent a malformed answer (message has the wrong type)"
    )


@pytest.mark.parametrize("adapter", ["openai", "gemini", "cohere", "cloudflare"])
@pytest.mark.parametrize(
    "name", ["json list", "json scalar", "truncated json", "invalid utf-8", "html", "2 MB event"]
)
def test_generic_garbage_is_always_an_error(
    upstream: FakeServer, providers: dict[str, Provider], adapter: str, name: str
) -> None:
    provider = providers[adapter]
    upstream.push("any", Behavior(body=STREAM_GENERIC[name]))
    with pytest.raises(UpstreamError) as info:
        provider.complete(dict(CHAT))
    check_error(info.value, provider.model)
    if name in ("truncated json", "invalid utf-8", "html"):
        assert "(not JSON)" in info.value.message
    upstream.push("any", Behavior(events=[b"data: " + STREAM_GENERIC[name] + b"\n\n", *STREAM_END[adapter]]))
    stream = provider.stream({**CHAT, "stream": True})
    try:
        with pytest.raises(UpstreamError) as info:
            list(stream)
    finally:
        stream.close()
    check_error(info.value, provider.model)
