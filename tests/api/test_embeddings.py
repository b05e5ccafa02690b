"""POST /v1/embeddings in-process, driven by the official `openai` SDK over httpx's WSGI transport,
against real fake upstreams of each provider (OpenAI-compatible, Gemini, Cohere, Workers AI)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import langchain_openai
import openai
import pytest

from app.config import ConfigError, parse_config
from tests.api.conftest import CLIENT_KEY, Proxy, openai_sdk
from tests.fakes import cloudflare as cf_fake
from tests.fakes import cohere as cohere_fake
from tests.fakes import gemini as gemini_fake
from tests.fakes.embeddings import (
    BGE,
    FakeCloudflareEmbeddings,
    FakeCohereEmbeddings,
    FakeGeminiEmbeddings,
    FakeGigaChatEmbeddings,
    FakeOpenAIEmbeddings,
    vector_for,
)
from tests.fakes.server import Behavior

UPSTREAM_KEY = "sk-fake-upstream-key"
INPUTS = [f"document number {i}: {'lorem ' * (i % 7)}" for i in range(250)]


@pytest.fixture
def fakes() -> Iterator[dict[str, Any]]:
    with (
        FakeOpenAIEmbeddings() as oa,
        FakeGeminiEmbeddings() as gm,
        FakeCohereEmbeddings() as co,
        FakeCloudflareEmbeddings() as cf,
        FakeGigaChatEmbeddings() as gc,
    ):
        yield {"openai": oa, "gemini": gm, "cohere": co, "cloudflare": cf, "gigachat": gc}


def embedding_model(name: str, provider: str, url: str, token: str, upstream: str, **extra: Any) -> dict:
    return {"name": name, "provider": provider, "url": url, "token": token, "upstream_model": upstream,
            "kind": "embedding", **extra}  # fmt: skip


def models(fakes: dict[str, Any]) -> list[dict[str, Any]]:
    oa, gm, co, cf, gc = (fakes[k] for k in ("openai", "gemini", "cohere", "cloudflare", "gigachat"))
    return [
        embedding_model("oa/embed", "openai", oa.embeddings_url, UPSTREAM_KEY, "text-embedding-3-small"),
        embedding_model(
            "gemini/embed",
            "gemini",
            gm.base_url,
            gemini_fake.API_KEY,
            "gemini-embedding-001",
            task_type="RETRIEVAL_DOCUMENT",
        ),
        embedding_model(
            "cohere/embed",
            "cohere",
            co.embed_url,
            cohere_fake.API_KEY,
            "embed-v4.0",
            input_type="search_query",
        ),
        embedding_model("cf/bge", "cloudflare", cf.run_url, cf_fake.API_TOKEN, BGE),
        embedding_model(
            "giga/embed",
            "gigachat",
            gc.api_url,
            "cid:secret",
            "Embeddings",
            auth_url=gc.auth_url,
            scope=gc.scope,
            verify_ssl_certs=False,
        ),
        {"name": "oa/chat", "provider": "openai", "url": oa.chat_url, "token": UPSTREAM_KEY},
    ]


@pytest.fixture
def app_proxy(proxy: Callable[..., Proxy], fakes: dict[str, Any]) -> Proxy:
    return proxy({"models": models(fakes), "retry": {"max_attempts": 1}, "routing": {"cooldown_seconds": 0}})


@pytest.fixture
def client(app_proxy: Proxy) -> Iterator[openai.OpenAI]:
    with openai_sdk(app_proxy) as sdk:
        yield sdk


@pytest.mark.parametrize(
    ("model", "fake", "route", "calls"),
    [
        ("oa/embed", "openai", "embeddings", 1),
        ("gemini/embed", "gemini", "embed", 3),
        ("cohere/embed", "cohere", "embed", 3),
        ("cf/bge", "cloudflare", "run", 3),
        ("giga/embed", "gigachat", "embeddings", 3),
    ],
)
def test_250_inputs_across_batches_in_order(
    client: openai.OpenAI, fakes: dict[str, Any], model: str, fake: str, route: str, calls: int
) -> None:
    answer = client.embeddings.create(model=model, input=INPUTS, encoding_format="float")
    assert [d.index for d in answer.data] == list(range(250))
    assert [d.embedding for d in answer.data] == [vector_for(text) for text in INPUTS]
    assert answer.model == model
    assert answer.usage.prompt_tokens > 0 and answer.usage.total_tokens == answer.usage.prompt_tokens
    sent = fakes[fake].requests_for(route)
    assert len(sent) == calls


def test_each_batch_counts_in_the_clients_usage(app_proxy: Proxy, client: openai.OpenAI) -> None:
    """/v1/usage counts embeddings as the windows do: a request per upstream batch, its tokens."""
    answer = client.embeddings.create(model="cohere/embed", input=INPUTS)
    usage = app_proxy.client.get("/v1/usage", headers=app_proxy.auth).get_json()["data"]
    rows = [(r["model"], r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in usage]
    assert rows == [("cohere/embed", 3, answer.usage.prompt_tokens, 0)]


def test_batches_are_split_at_the_provider_size(client: openai.OpenAI, fakes: dict[str, Any]) -> None:
    client.embeddings.create(model="cohere/embed", input=INPUTS)
    sizes = [len(r.json["texts"]) for r in fakes["cohere"].requests_for("embed")]
    assert sizes == [96, 96, 58]
    assert {r.json["input_type"] for r in fakes["cohere"].requests_for("embed")} == {"search_query"}
    client.embeddings.create(model="gemini/embed", input=INPUTS)
    gemini = fakes["gemini"].requests_for("embed")
    assert [len(r.json["requests"]) for r in gemini] == [100, 100, 50]
    assert gemini[0].json["requests"][0]["taskType"] == "RETRIEVAL_DOCUMENT"
    assert gemini[0].headers["x-goog-api-key"] == gemini_fake.API_KEY and "key" not in gemini[0].query


def test_each_batch_counts_one_request(proxy: Callable[..., Proxy], fakes: dict[str, Any]) -> None:
    limited = dict(models(fakes)[3], requests_per_minute=3)
    app = proxy({"models": [limited], "retry": {"max_attempts": 1}})
    assert app.post("/v1/embeddings", {"model": "cf/bge", "input": INPUTS}).status_code == 200  # 3 batches
    refused = app.post("/v1/embeddings", {"model": "cf/bge", "input": "one more"})
    assert refused.status_code == 429
    assert len(fakes["cloudflare"].requests_for("run")) == 3


def test_base64_is_little_endian_float32(client: openai.OpenAI, app_proxy: Proxy) -> None:
    # the SDK asks for base64 by default and decodes it itself
    answer = client.embeddings.create(model="gemini/embed", input=["one", "two"])
    assert [d.embedding for d in answer.data] == [vector_for("one"), vector_for("two")]
    raw = app_proxy.post("/v1/embeddings", {"model": "cf/bge", "input": "one", "encoding_format": "base64"})
    encoded = raw.get_json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = base64.b64decode(encoded)
    assert list(struct.unpack(f"<{len(decoded) // 4}f", decoded)) == vector_for("one")


@pytest.mark.parametrize(
    ("model", "fake", "route", "field"),
    [
        ("oa/embed", "openai", "embeddings", "dimensions"),
        ("gemini/embed", "gemini", "embed", "outputDimensionality"),
        ("cohere/embed", "cohere", "embed", "output_dimension"),
    ],
)
def test_dimensions(
    client: openai.OpenAI, fakes: dict[str, Any], model: str, fake: str, route: str, field: str
) -> None:
    answer = client.embeddings.create(model=model, input=["short"], dimensions=3, encoding_format="float")
    assert answer.data[0].embedding == vector_for("short", 3)
    body = fakes[fake].requests_for(route)[0].json
    assert field in str(body)


def test_single_string_and_user(client: openai.OpenAI, fakes: dict[str, Any]) -> None:
    answer = client.embeddings.create(model="oa/embed", input="hello", user="u-1", encoding_format="float")
    assert len(answer.data) == 1 and answer.data[0].embedding == vector_for("hello")
    sent = fakes["openai"].requests_for("embeddings")[0].json
    assert sent["user"] == "u-1" and sent["model"] == "text-embedding-3-small"
    assert sent["encoding_format"] == "float"


def test_token_arrays(app_proxy: Proxy, fakes: dict[str, Any]) -> None:
    ok = app_proxy.post("/v1/embeddings", {"model": "oa/embed", "input": [[1, 2, 3], [4, 5]]})
    assert ok.status_code == 200, ok.get_json()
    assert ok.get_json()["data"][1]["embedding"] == vector_for([4, 5])
    for model in ("gemini/embed", "cohere/embed", "cf/bge", "giga/embed"):
        refused = app_proxy.post("/v1/embeddings", {"model": model, "input": [1, 2, 3]})
        assert refused.status_code == 400
        error = refused.get_json()["error"]
        assert "text only" in error["message"] and error["param"] == "input"
    assert fakes["gemini"].requests_for("embed") == []


def test_cloudflare_refuses_dimensions(app_proxy: Proxy, fakes: dict[str, Any]) -> None:
    answer = app_proxy.post("/v1/embeddings", {"model": "cf/bge", "input": "x", "dimensions": 4})
    assert answer.status_code == 400
    assert answer.get_json()["error"]["param"] == "dimensions"
    assert fakes["cloudflare"].requests_for("run") == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "oa/embed"}, "input"),
        ({"model": "oa/embed", "input": []}, "input"),
        ({"model": "oa/embed", "input": [""]}, "input"),
        ({"model": "oa/embed", "input": [1.5]}, "input"),
        ({"model": "oa/embed", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "oa/embed", "input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x"}, "model"),
    ],
)
def test_bad_requests(app_proxy: Proxy, body: dict[str, Any], param: str) -> None:
    answer = app_proxy.post("/v1/embeddings", body)
    assert answer.status_code == 400
    assert answer.get_json()["error"]["param"] == param


def test_kinds_do_not_mix(app_proxy: Proxy, fakes: dict[str, Any]) -> None:
    chat = app_proxy.post("/v1/embeddings", {"model": "oa/chat", "input": "x"})
    assert chat.status_code == 400
    assert chat.get_json()["error"]["message"] == "Model 'oa/chat' is a chat model, not an embedding model"
    embed = app_proxy.post(
        "/v1/chat/completions", {"model": "oa/embed", "messages": [{"role": "user", "content": "x"}]}
    )
    assert embed.status_code == 400
    assert "is an embedding model, not a chat model" in embed.get_json()["error"]["message"]
    assert fakes["openai"].requests == []


def test_one_failing_batch_fails_the_request(client: openai.OpenAI, fakes: dict[str, Any]) -> None:
    failing = Behavior(status=500, json={"id": "x", "message": "internal server error"})
    fakes["cohere"].push("embed", FakeCohereEmbeddings.embed_answer, failing)
    with pytest.raises(openai.APIStatusError) as caught:
        client.embeddings.create(model="cohere/embed", input=INPUTS)
    assert caught.value.status_code == 502
    assert len(fakes["cohere"].requests_for("embed")) == 2  # the third batch is never sent


def test_group_falls_back_per_batch(proxy: Callable[..., Proxy], fakes: dict[str, Any]) -> None:
    raw = models(fakes)
    group = [
        dict(raw[0], model_size="EMBED", priority=1),
        dict(raw[0], name="oa/embed-2", model_size="EMBED"),
    ]
    app = proxy({"models": group, "retry": {"max_attempts": 1}, "routing": {"cooldown_seconds": 0}})
    fakes["openai"].push_error("server_error", route="embeddings")
    answer = app.post("/v1/embeddings", {"model": "EMBED", "input": ["a", "b"]})
    assert answer.status_code == 200, answer.get_json()
    assert [d["embedding"] for d in answer.get_json()["data"]] == [vector_for("a"), vector_for("b")]
    assert len(fakes["openai"].requests_for("embeddings")) == 2


def test_mixed_embedding_group_is_refused(fakes: dict[str, Any]) -> None:
    raw = models(fakes)
    group = [dict(raw[0], model_size="EMBED"), dict(raw[1], model_size="EMBED")]
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": group}, {})
    message = str(caught.value)
    assert "oa/embed" in message and "gemini/embed" in message and "embedding_space" in message
    same = [
        dict(raw[0], model_size="EMBED", embedding_space="s1"),
        dict(raw[1], model_size="EMBED", embedding_space="s1"),
    ]
    assert len(parse_config({"models": same}, {}).models) == 2


def test_embedding_kind_needs_an_embedding_api(fakes: dict[str, Any]) -> None:
    wrong = dict(models(fakes)[0], url=fakes["openai"].chat_url)
    with pytest.raises(ConfigError, match="embedding models need"):
        parse_config({"models": [wrong]}, {})


def test_max_batch_per_model(proxy: Callable[..., Proxy], fakes: dict[str, Any]) -> None:
    app = proxy({"models": [dict(models(fakes)[0], max_batch=60)]})
    answer = app.post("/v1/embeddings", {"model": "oa/embed", "input": INPUTS, "encoding_format": "float"})
    assert [d["embedding"] for d in answer.get_json()["data"]] == [vector_for(t) for t in INPUTS]
    assert [len(r.json["input"]) for r in fakes["openai"].requests_for("embeddings")] == [60, 60, 60, 60, 10]


def test_langchain_openai_embeddings(app_proxy: Proxy) -> None:
    http = httpx.Client(transport=httpx.WSGITransport(app=app_proxy.app))
    embedder = langchain_openai.OpenAIEmbeddings(
        model="gemini/embed",
        base_url="http://proxy.test/v1",
        api_key=CLIENT_KEY,
        http_client=http,
        check_embedding_ctx_length=False,  # no tiktoken download: the proxy takes the text as it is
        max_retries=0,
    )
    assert embedder.embed_documents(INPUTS) == [vector_for(text) for text in INPUTS]
    assert embedder.embed_query("what is it?") == vector_for("what is it?")


def test_an_alias_names_an_embedding_model(proxy: Callable[..., Proxy], fakes: dict[str, Any]) -> None:
    app = proxy({"models": models(fakes), "aliases": {"text-embedding-3-*": "gemini/embed"}})
    answer = app.post(
        "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi", "encoding_format": "float"}
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["data"][0]["embedding"] == vector_for("hi")
    assert len(fakes["gemini"].requests_for("embed")) == 1
