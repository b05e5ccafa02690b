"""Both fronts over the fake upstream of every provider, in-process: each answers, plain and
streamed, with the same text that Chat Completions gives for the same model, plain and streamed
(the fakes' streamed answers differ from their plain ones)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.api.conftest import sse_lines
from tests.fakes import cloudflare, cohere, gemini
from tests.fakes.cloudflare import FakeCloudflare
from tests.fakes.cohere import FakeCohere
from tests.fakes.gemini import FakeGemini
from tests.fakes.gigachat import FakeGigaChat
from tests.fakes.openai import FakeOpenAI

PROVIDERS = ("openai", "groq", "openrouter", "gemini", "cohere", "cloudflare", "gigachat")


@contextlib.contextmanager
def upstream(provider: str) -> Iterator[dict[str, Any]]:
    """A running fake of `provider` and the config entry of one model on it."""
    if provider in ("openai", "groq", "openrouter"):
        with FakeOpenAI(flavor=provider) as fake:  # type: ignore[arg-type]
            yield {"name": f"{provider}/m", "url": fake.chat_url, "token": fake.api_key}
    elif provider == "gemini":
        with FakeGemini() as fake:
            yield {"name": "gemini/gemini-2.0-flash", "url": fake.base_url, "token": gemini.API_KEY}
    elif provider == "cohere":
        with FakeCohere() as fake:
            yield {"name": "cohere/command-a-03-2025", "url": fake.chat_url, "token": cohere.API_KEY}
    elif provider == "cloudflare":
        with FakeCloudflare() as fake:
            url = fake.run_url
            yield {
                "name": "cloudflare/cf/meta/llama-3.1-8b-instruct",
                "url": url,
                "token": cloudflare.API_TOKEN,
            }
    else:
        with FakeGigaChat() as fake:
            model = fake.model_config()
            fields = ("name", "url", "upstream_model", "token", "auth_url", "scope", "verify_ssl_certs")
            yield {field: getattr(model, field) for field in fields}


def stream_events(raw: bytes) -> list[tuple[str, Any]]:
    events = []
    for block in sse_lines(raw):
        if block.startswith(b":"):
            continue
        head, data = block.split(b"\n", 1)
        events.append((head.removeprefix(b"event: ").decode(), orjson.loads(data.removeprefix(b"data: "))))
    return events


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fronts_answer_like_chat(proxy, provider):
    with upstream(provider) as model:
        app = proxy({"models": [{**model, "provider": provider, "model_size": "SMALL"}]})
        question = [{"role": "user", "content": "Hello"}]
        chat = app.post("/v1/chat/completions", {"model": "SMALL", "messages": question})
        assert chat.status_code == 200, chat.json
        reference = chat.json["choices"][0]["message"]["content"]
        chat_stream = app.post(
            "/v1/chat/completions", {"model": "SMALL", "messages": question, "stream": True}
        )
        chunks = [orjson.loads(b[6:]) for b in sse_lines(chat_stream.data) if b.startswith(b"data: {")]
        streamed_reference = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert reference and streamed_reference

        plain = app.post("/v1/messages", {"model": "SMALL", "max_tokens": 100, "messages": question})
        assert plain.status_code == 200, plain.json
        assert "".join(b["text"] for b in plain.json["content"] if b["type"] == "text") == reference
        assert plain.json["model"] == model["name"] and plain.json["usage"]["output_tokens"] > 0

        streamed = app.post(
            "/v1/messages", {"model": "SMALL", "max_tokens": 100, "messages": question, "stream": True}
        )
        events = stream_events(streamed.data)
        texts = [d["delta"].get("text", "") for n, d in events if n == "content_block_delta"]
        assert "".join(texts) == streamed_reference and events[-1][0] == "message_stop"

        response = app.post("/v1/responses", {"model": "SMALL", "input": "Hello"})
        assert response.status_code == 200 and response.json["output_text"] == reference

        streamed = app.post("/v1/responses", {"model": "SMALL", "input": "Hello", "stream": True})
        events = stream_events(streamed.data)
        assert events[-1][0] == "response.completed"
        assert events[-1][1]["response"]["output_text"] == streamed_reference
