"""Image models behind the real gateway under gunicorn, driven by the official `openai` SDK: one
OpenAI-compatible model (FakeOpenAI), two Workers AI models (flux JSON, stable-diffusion raw PNG),
a Hugging Face style model (raw JPEG) and a chat model."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import requests

from tests.fakes import cloudflare as cf_fake
from tests.fakes.images import HF_TOKEN, TINY_JPEG, TINY_PNG, FakeCloudflareImages, FakeHuggingFace
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import Behavior
from tests.harness import GunicornServer, openai_client

KEY = "test-client-key-images"
UPSTREAM_KEY = "sk-fake-upstream-key"
DALLE = "openai/dall-e-3"
FLUX = "cloudflare/cf/black-forest-labs/flux-1-schnell"
SDXL = "cloudflare/cf/stabilityai/stable-diffusion-xl-base-1.0"
HF = "hf/flux-schnell"
CHAT = "openai/gpt-4o-mini"
PROMPT = "a red fox in snow"


@pytest.fixture
def cloudflare() -> Iterator[FakeCloudflareImages]:
    with FakeCloudflareImages() as server:
        yield server


@pytest.fixture
def hf() -> Iterator[FakeHuggingFace]:
    with FakeHuggingFace() as server:
        yield server


def image_model(name: str, provider: str, url: str, token: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": provider, "url": url, "token": token, "kind": "image", **extra}


@pytest.fixture
def proxy(
    fake_openai: FakeOpenAI,
    cloudflare: FakeCloudflareImages,
    hf: FakeHuggingFace,
    gunicorn_server: Callable[..., GunicornServer],
) -> GunicornServer:
    models = [
        {"name": CHAT, "provider": "openai", "url": fake_openai.chat_url, "token": UPSTREAM_KEY},
        image_model(
            FLUX, "cloudflare", cloudflare.run_url, cf_fake.API_TOKEN, priority=1, model_size="IMAGE"
        ),
        image_model(DALLE, "openai", fake_openai.images_url, UPSTREAM_KEY, priority=2, model_size="IMAGE"),
        image_model(SDXL, "cloudflare", cloudflare.run_url, cf_fake.API_TOKEN, priority=3),
        image_model(HF, "openai", hf.model_url(), HF_TOKEN, priority=4),
    ]
    models[0]["model_size"] = "SMALL"
    config = {
        "models": models,
        "http": {"read_timeout": 3, "connect_timeout": 1},
        "retry": {"max_attempts": 1},
        "routing": {"cooldown_seconds": 0},
    }
    return gunicorn_server(config, env={"AI_PROXY_API_KEYS": KEY})


@pytest.fixture
def client(proxy: GunicornServer) -> openai.OpenAI:
    return openai_client(proxy, api_key=KEY)


def decoded(answer: Any) -> list[bytes]:
    return [base64.b64decode(item.b64_json) for item in answer.data]


def legacy(proxy: GunicornServer, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{proxy.url}/image", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    )


def test_generate_b64_json_is_the_upstreams_png(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    raw = client.images.with_raw_response.generate(
        model=DALLE, prompt=PROMPT, response_format="b64_json", size="1024x1024"
    )
    answer = raw.parse()
    assert decoded(answer) == [TINY_PNG]
    assert answer.data[0].revised_prompt == f"A vivid image: {PROMPT}"
    assert answer.created > 0
    assert raw.headers["X-AI-Proxy-Model"] == DALLE
    assert raw.headers["X-Request-ID"]
    (upstream,) = fake_openai.requests_for("images")
    assert upstream.json == {
        "prompt": PROMPT,
        "size": "1024x1024",
        "model": "dall-e-3",
        "n": 1,
        "response_format": "b64_json",
    }


def test_url_format_answers_a_data_url(client: openai.OpenAI) -> None:
    answer = client.images.generate(model=HF, prompt=PROMPT, response_format="url")
    url = answer.data[0].url or ""
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == TINY_JPEG


def test_upstream_url_answer_is_downloaded(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    """The proxy asks for base64; an upstream that answers a URL anyway gets it downloaded."""
    answer = {"created": 1, "data": [{"url": f"{fake_openai.url}/files/img-fake.png"}]}
    fake_openai.push("images", Behavior(json=answer))
    assert decoded(client.images.generate(model=DALLE, prompt=PROMPT)) == [TINY_PNG]
    assert [r.path for r in fake_openai.requests_for("files")] == ["/files/img-fake.png"]


def test_group_picks_by_priority(client: openai.OpenAI, cloudflare: FakeCloudflareImages) -> None:
    raw = client.images.with_raw_response.generate(model="IMAGE", prompt=PROMPT)
    assert raw.headers["X-AI-Proxy-Model"] == FLUX
    assert decoded(raw.parse()) == [TINY_JPEG]
    assert cloudflare.requests[0].json == {"prompt": PROMPT}


def test_group_falls_back_from_a_failing_model(
    client: openai.OpenAI, cloudflare: FakeCloudflareImages, fake_openai: FakeOpenAI
) -> None:
    cloudflare.push_error("internal")  # flux answers 500
    raw = client.images.with_raw_response.generate(model="IMAGE", prompt=PROMPT, response_format="b64_json")
    assert raw.headers["X-AI-Proxy-Model"] == DALLE
    assert decoded(raw.parse()) == [TINY_PNG]
    assert len(cloudflare.requests) == 1 and len(fake_openai.requests_for("images")) == 1


def test_no_model_picks_an_image_model(client: openai.OpenAI) -> None:
    raw = client.images.with_raw_response.generate(prompt=PROMPT)
    assert raw.headers["X-AI-Proxy-Model"] in (FLUX, DALLE, SDXL, HF)
    assert decoded(raw.parse())[0][:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0")


def test_n_on_a_one_image_upstream(client: openai.OpenAI, cloudflare: FakeCloudflareImages) -> None:
    answer = client.images.generate(model=SDXL, prompt=PROMPT, n=3)
    assert decoded(answer) == [TINY_PNG] * 3
    assert len(cloudflare.requests) == 3


def test_image_model_used_for_chat_is_404(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    for name in (DALLE, "IMAGE"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
        assert caught.value.code == "model_not_found"
    assert fake_openai.requests == []


def test_chat_models_never_serve_images(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    for name in ("SMALL", CHAT):
        with pytest.raises(openai.NotFoundError):
            client.images.generate(model=name, prompt=PROMPT)
    assert fake_openai.requests == []
    # and the chat group still serves chat
    answer = client.chat.completions.create(model="SMALL", messages=[{"role": "user", "content": "hi"}])
    assert answer.model == CHAT


def test_models_list_shows_image_models_and_group(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {DALLE, FLUX, SDXL, HF, "IMAGE", "SMALL"} <= ids


@pytest.mark.parametrize(
    ("model", "body", "content_type"),
    [(DALLE, TINY_PNG, "image/png"), (SDXL, TINY_PNG, "image/png"), (HF, TINY_JPEG, "image/jpeg")],
)
def test_legacy_image_returns_raw_bytes(
    proxy: GunicornServer, model: str, body: bytes, content_type: str
) -> None:
    response = legacy(proxy, {"model": model, "prompt": PROMPT})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["X-AI-Proxy-Model"] == model
    assert response.content == body


def test_legacy_image_errors_are_openai_shaped(proxy: GunicornServer) -> None:
    response = legacy(proxy, {"model": "SMALL", "prompt": PROMPT})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    response = legacy(proxy, {"model": DALLE})
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"


def test_non_image_upstream_answer_is_502(client: openai.OpenAI, hf: FakeHuggingFace) -> None:
    html = b"<!DOCTYPE html><html><body>Bad Gateway</body></html>"
    hf.push("inference", Behavior(body=html, headers={"Content-Type": "image/jpeg"}))
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model=HF, prompt=PROMPT)
    assert caught.value.status_code == 502
    assert "instead of an image" in caught.value.message


def test_non_image_upstream_answer_on_legacy_path_is_502(proxy: GunicornServer, hf: FakeHuggingFace) -> None:
    hf.push("inference", Behavior(json={"error": "Internal Server Error"}))
    response = legacy(proxy, {"model": HF, "prompt": PROMPT})
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["type"] == "upstream_error"


def test_content_policy_violation_is_a_bad_request(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.push_error("content_policy", route="images")
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=DALLE, prompt=PROMPT, response_format="b64_json")
    assert caught.value.status_code == 400
    assert caught.value.code == "content_policy_violation"
    assert "safety system" in caught.value.message


def test_upstream_rate_limit_on_a_concrete_model(
    client: openai.OpenAI, cloudflare: FakeCloudflareImages
) -> None:
    cloudflare.push_error("daily_limit")
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model=FLUX, prompt=PROMPT)
    assert "daily free allocation" in caught.value.message
