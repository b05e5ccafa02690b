"""`stream_options.include_usage` gives a final usage chunk for every provider, and a stream's real
usage always settles the token quota (asked for or not). In process, over every provider's fake."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import orjson
import pytest

from tests.fakes import cloudflare as cf_fake
from tests.fakes import cohere as cohere_fake
from tests.fakes import gemini as gemini_fake
from tests.fakes.cloudflare import FakeCloudflare
from tests.fakes.cohere import FakeCohere
from tests.fakes.gemini import FakeGemini
from tests.fakes.gigachat import FakeGigaChat
from tests.fakes.openai import FakeOpenAI
from tests.harness import InProcessProxy
from tests.ops.conftest import CLIENT_KEY, FAST_ENV, app_stream, chat_body

TOKENS_PER_MINUTE = 100_000


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Any]]:
    with ExitStack() as stack:
        fakes = {
            "openai": stack.enter_context(FakeOpenAI()),
            "groq": stack.enter_context(FakeOpenAI(flavor="groq")),
            "openrouter": stack.enter_context(FakeOpenAI(flavor="openrouter")),
            "gemini": stack.enter_context(FakeGemini()),
            "cohere": stack.enter_context(FakeCohere()),
            "cloudflare": stack.enter_context(FakeCloudflare()),
            "gigachat": stack.enter_context(FakeGigaChat()),
        }
        yield fakes


def models(f: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": "openai/gpt-4o-mini",
            "provider": "openai",
            "url": f["openai"].chat_url,
            "token": "sk-fake-upstream-key",
        },
        {
            "name": "groq/llama-3.1-8b-instant",
            "provider": "groq",
            "url": f["groq"].chat_url,
            "token": "sk-fake-upstream-key",
        },
        {
            "name": "openrouter/openai/gpt-4o-mini",
            "provider": "openrouter",
            "url": f["openrouter"].chat_url,
            "token": "sk-fake-upstream-key",
        },
        {
            "name": "gemini/gemini-2.5-flash",
            "provider": "gemini",
            "url": f["gemini"].base_url,
            "token": gemini_fake.API_KEY,
        },
        {
            "name": "cohere/command-a-03-2025",
            "provider": "cohere",
            "url": f["cohere"].chat_url,
            "token": cohere_fake.API_KEY,
        },
        {
            "name": "cloudflare/cf/meta/llama-3.1-8b-instruct",
            "provider": "cloudflare",
            "url": f["cloudflare"].run_url,
            "token": cf_fake.API_TOKEN,
        },
        {
            "name": "gigachat/GigaChat-2",
            "provider": "gigachat",
            "url": f["gigachat"].api_url,
            "auth_url": f["gigachat"].auth_url,
            "scope": "GIGACHAT_API_PERS",
            "verify_ssl_certs": False,
            "token": "cid:secret",
        },
    ]


@pytest.fixture(scope="module")
def proxy(upstreams) -> Iterator[InProcessProxy]:
    cfg = {
        "models": [
            {**m, **{"requests_per_minute": 1000, "tokens_per_minute": TOKENS_PER_MINUTE}}
            for m in models(upstreams)
        ],
        "server": {"heartbeat_seconds": 1},
    }
    with InProcessProxy(cfg, env=FAST_ENV) as proxy:
        yield proxy


MODELS = [
    "openai/gpt-4o-mini",
    "groq/llama-3.1-8b-instant",
    "openrouter/openai/gpt-4o-mini",
    "gemini/gemini-2.5-flash",
    "cohere/command-a-03-2025",
    "cloudflare/cf/meta/llama-3.1-8b-instruct",
    "gigachat/GigaChat-2",
]


def tokens_used(proxy: InProcessProxy, name: str) -> int:
    answer = proxy.client.get("/v1/quota", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert answer.status_code == 200
    (entry,) = [m for m in orjson.loads(answer.get_data())["data"] if m["name"] == name]
    (window,) = [w for w in entry["windows"] if w["window"] == "tokens_per_minute"]
    return window["used"]


@pytest.mark.parametrize("name", MODELS)
def test_include_usage_gives_a_final_usage_chunk_and_settles_tokens(proxy, name):
    before = tokens_used(proxy, name)
    result = app_stream(proxy, chat_body(name, stream_options={"include_usage": True}))
    assert result.status == 200 and result.errors == [] and result.content
    *chunks, done = result.datas
    assert done == "[DONE]"
    last = chunks[-1]
    assert last["choices"] == [] and last["model"] == name, last
    usage = last["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert not any(c.get("usage") for c in chunks[:-1] if c["choices"] == [])
    # The reservation's estimate was replaced by what the upstream reported.
    assert tokens_used(proxy, name) - before == usage["total_tokens"]


@pytest.mark.parametrize(
    ("name", "options"),
    [(name, {}) for name in MODELS]
    + [(name, {"stream_options": {"include_usage": False}}) for name in MODELS],
)
def test_usage_settles_tokens_even_when_the_client_did_not_ask(proxy, name, options):
    reference = app_stream(proxy, chat_body(name, stream_options={"include_usage": True})).datas[-2]["usage"]
    before = tokens_used(proxy, name)
    result = app_stream(proxy, chat_body(name, **options))
    assert result.status == 200 and result.errors == [] and result.content
    assert not [d for d in result.datas if isinstance(d, dict) and d.get("choices") == []], options
    assert tokens_used(proxy, name) - before == reference["total_tokens"]
