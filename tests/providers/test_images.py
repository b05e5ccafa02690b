"""The image adapter's pure functions: shape choice, request building, answer parsing, magic bytes."""

from __future__ import annotations

import base64
import json

import pytest

from app.config import HttpConfig, ModelConfig, default_upstream_model
from app.errors import (
    InvalidRequest,
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
)
from app.http import SessionPool
from app.providers import build_provider, image_shape
from app.providers import images as im
from tests.fakes import cloudflare as cf_fake
from tests.fakes.images import FLUX, TINY_GIF, TINY_JPEG, TINY_PNG, TINY_WEBP, flux_answer, tiny_jpeg
from tests.fakes.openai import error_body, images_body

NAME = "test/model"
B64_PNG = base64.b64encode(TINY_PNG).decode()
OPENAI_URL = "https://api.openai.com/v1/images/generations"
TOGETHER_URL = "https://api.together.xyz/v1/images/generations"
CF_RUN = "https://api.cloudflare.com/client/v4/accounts/abc/ai/run"
HF_URL = "https://router.huggingface.co/hf-inference/models/black-forest-labs/FLUX.1-schnell"


def model(name: str, provider: str, url: str, **extra) -> ModelConfig:
    upstream = extra.pop("upstream_model", None) or default_upstream_model(name, provider)
    return ModelConfig(name=name, provider=provider, url=url, upstream_model=upstream, kind="image", **extra)


# --- shape and URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "url", "shape"),
    [
        ("openai", OPENAI_URL, "openai"),
        ("openai", OPENAI_URL + "/", "openai"),
        ("openai", TOGETHER_URL, "openai"),
        ("openrouter", "https://openrouter.ai/api/v1/images/generations", "openai"),
        ("groq", "https://api.groq.com/openai/v1/images/generations", "openai"),
        ("gemini", "https://generativelanguage.googleapis.com/v1beta/openai/images/generations", "openai"),
        ("cloudflare", CF_RUN, "cloudflare"),
        ("cloudflare", f"{CF_RUN}/{FLUX}", "cloudflare"),
        ("openai", HF_URL, "raw"),
        ("groq", "https://example.test/generate", "raw"),
        ("gemini", "https://generativelanguage.googleapis.com/v1beta/models", None),
        ("gigachat", "https://gigachat.devices.sberbank.ru/api/v1", None),
    ],
)
def test_wire_shape(provider: str, url: str, shape: str | None) -> None:
    assert image_shape(provider, url) == shape


def test_cloudflare_url_appends_the_model_unless_it_names_one() -> None:
    flux = model("cloudflare/cf/black-forest-labs/flux-1-schnell", "cloudflare", CF_RUN + "/")
    assert im.endpoint_url(flux, "cloudflare") == f"{CF_RUN}/{FLUX}"
    full = model("flux", "cloudflare", f"{CF_RUN}/{FLUX}")
    assert im.endpoint_url(full, "cloudflare") == f"{CF_RUN}/{FLUX}"
    gateway = "https://gateway.ai.cloudflare.com/v1/abc/default/workers-ai"
    via_gateway = model("cloudflare/cf/black-forest-labs/flux-1-schnell", "cloudflare", gateway)
    assert im.endpoint_url(via_gateway, "cloudflare") == f"{gateway}/{FLUX}"
    hf = model("hf/flux", "openai", HF_URL)
    assert im.endpoint_url(hf, "raw") == HF_URL


@pytest.mark.parametrize(
    ("size", "parsed"),
    [("1024x768", (1024, 768)), (" 512 X 512 ", (512, 512)), ("auto", None), (None, None), (512, None)],
)
def test_parse_size(size, parsed) -> None:
    assert im.parse_size(size) == parsed


# --- requests ---------------------------------------------------------------------------------


def test_openai_request_asks_for_base64_and_keeps_the_clients_fields() -> None:
    body = {
        "model": "IMAGE",
        "prompt": "a red fox in snow",
        "n": 2,
        "size": "1024x1024",
        "response_format": "url",
        "quality": "hd",
        "style": "vivid",
        "user": None,
        "stream": True,
    }
    assert im.build_openai_request(body, "dall-e-3", OPENAI_URL) == {
        "model": "dall-e-3",
        "prompt": "a red fox in snow",
        "n": 2,
        "size": "1024x1024",
        "quality": "hd",
        "style": "vivid",
        "response_format": "b64_json",
    }


def test_openai_request_defaults_n_to_one() -> None:
    sent = im.build_openai_request({"prompt": "x"}, "dall-e-2", OPENAI_URL)
    assert sent == {"prompt": "x", "model": "dall-e-2", "n": 1, "response_format": "b64_json"}


@pytest.mark.parametrize("upstream", ["gpt-image-1", "gpt-image-1-mini", "openai/gpt-image-1"])
def test_gpt_image_models_get_no_response_format(upstream: str) -> None:
    body = {"prompt": "x", "response_format": "b64_json", "partial_images": 2, "background": "opaque"}
    sent = im.build_openai_request(body, upstream, OPENAI_URL)
    assert sent == {"prompt": "x", "background": "opaque", "model": upstream, "n": 1}


def test_together_gets_base64_and_width_height() -> None:
    body = {"prompt": "x", "size": "512x768", "steps": 4}
    sent = im.build_openai_request(body, "black-forest-labs/FLUX.1-schnell", TOGETHER_URL)
    assert sent == {
        "prompt": "x",
        "steps": 4,
        "model": "black-forest-labs/FLUX.1-schnell",
        "n": 1,
        "response_format": "base64",
        "width": 512,
        "height": 768,
    }
    explicit = im.build_openai_request(
        {"prompt": "x", "size": "1x1", "width": 640}, "m", "https://api.together.ai/v1/images/generations"
    )
    assert explicit["width"] == 640 and "height" not in explicit and "size" not in explicit


def test_cloudflare_request_is_the_prompt_and_native_inputs() -> None:
    body = {"model": "IMAGE", "prompt": "a cyberpunk lizard", "n": 2, "size": "1024x1024", "steps": 4}
    assert im.build_cloudflare_request(body) == {"prompt": "a cyberpunk lizard", "steps": 4}
    sdxl = {"prompt": "p", "negative_prompt": "blur", "width": 768, "height": 512, "num_steps": 20, "seed": 1}
    assert im.build_cloudflare_request(sdxl) == sdxl


def test_raw_request_is_inputs_with_size_as_parameters() -> None:
    assert im.build_raw_request({"model": "m", "prompt": "p", "n": 1}) == {"inputs": "p"}
    assert im.build_raw_request({"prompt": "p", "size": "512x256"}) == {
        "inputs": "p",
        "parameters": {"width": 512, "height": 256},
    }
    given = {"prompt": "p", "size": "512x256", "parameters": {"width": 64, "num_inference_steps": 4}}
    assert im.build_raw_request(given) == {
        "inputs": "p",
        "parameters": {"width": 64, "num_inference_steps": 4},
    }


# --- magic bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (TINY_PNG, "image/png"),
        (TINY_JPEG, "image/jpeg"),
        (tiny_jpeg(9), "image/jpeg"),
        (TINY_GIF, "image/gif"),
        (TINY_WEBP, "image/webp"),
    ],
)
def test_real_images_pass_and_are_typed_by_their_bytes(data: bytes, kind: str) -> None:
    assert im.sniff_image(data) == kind
    assert im.image_problem(data) is None
    image = im.checked_image(data, NAME, "revised")
    assert (image.data, image.content_type, image.revised_prompt) == (data, kind, "revised")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty body"),
        (b"<!DOCTYPE html><html><body>Bad gateway</body></html>", "HTML"),
        (b"  <html>oops</html>", "HTML"),
        (b'{"error": "Model is currently loading", "estimated_time": 20}', "JSON"),
        (b'[{"generated_text": "a fox"}]', "JSON"),
        (b"plain text", "unknown data"),
        (TINY_PNG[:40], "image/png of only 40 bytes"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not an image"),  # no IHDR chunk
        (TINY_JPEG[:60], "image/jpeg of only 60 bytes"),
        (TINY_GIF[:20], "image/gif of only 20 bytes"),
        (TINY_WEBP[:-4] + b"", "truncated image/webp"),
    ],
)
def test_non_images_are_upstream_errors(data: bytes, why: str) -> None:
    problem = im.image_problem(data)
    assert problem is not None and why in problem
    with pytest.raises(UpstreamError, match=f"model {NAME} answered .*instead of an image") as caught:
        im.checked_image(data, NAME)
    assert caught.value.status == 502 and caught.value.retryable


@pytest.mark.parametrize(
    "text",
    [
        B64_PNG,
        B64_PNG.rstrip("="),
        "\n".join(B64_PNG[i : i + 20] for i in range(0, len(B64_PNG), 20)),
        f"data:image/png;base64,{B64_PNG}",
    ],
)
def test_decode_base64_is_tolerant(text: str) -> None:
    assert im.decode_base64(text, NAME) == TINY_PNG


@pytest.mark.parametrize("text", ["", None, 42, "not base64 at all!"])
def test_decode_base64_rejects_garbage(text) -> None:
    with pytest.raises(UpstreamError):
        im.decode_base64(text, NAME)


# --- answers ----------------------------------------------------------------------------------


def test_openai_answer_with_base64_keeps_revised_prompt() -> None:
    items = im.parse_openai_answer(images_body("dall-e-3", n=2, prompt="a fox"), NAME)
    assert [(i.data, i.url, i.revised_prompt) for i in items] == [
        (TINY_PNG, None, "A vivid image: a fox")
    ] * 2


def test_gpt_image_answer() -> None:
    (item,) = im.parse_openai_answer(images_body("gpt-image-1"), NAME)
    assert item.data == TINY_PNG and item.revised_prompt is None


def test_openai_answer_with_urls_leaves_them_to_fetch() -> None:
    body = images_body("dall-e-3", response_format="url", image_url="https://img.invalid/a.png")
    body["data"].append({"url": f"data:image/png;base64,{B64_PNG}"})
    first, second = im.parse_openai_answer(body, NAME)
    assert (first.data, first.url) == (None, "https://img.invalid/a.png")
    assert (second.data, second.url) == (TINY_PNG, None)


@pytest.mark.parametrize(
    "answer",
    [
        {"created": 1, "data": []},
        {"created": 1},
        [],
        {"data": [{"revised_prompt": "only this"}]},
        {"data": [{"url": "ftp://files.invalid/a.png"}]},
        {"data": ["iVBOR"]},
    ],
)
def test_openai_answer_without_images_is_an_upstream_error(answer) -> None:
    with pytest.raises(UpstreamError):
        im.parse_openai_answer(answer, NAME)


def test_openai_answer_with_an_error_object() -> None:
    with pytest.raises(RateLimited):
        im.parse_openai_answer({"error": {"message": "slow down", "code": 429}}, NAME)
    with pytest.raises(UpstreamError, match="boom"):
        im.parse_openai_answer({"error": "boom"}, NAME)


def test_cloudflare_answers() -> None:
    assert im.parse_cloudflare_answer(json.dumps(flux_answer()).encode(), NAME) == TINY_JPEG
    assert im.parse_cloudflare_answer(TINY_PNG, NAME) == TINY_PNG
    html = b"<html>502</html>"
    assert im.parse_cloudflare_answer(html, NAME) == html  # checked_image then rejects it
    with pytest.raises(UpstreamError, match="without an image"):
        im.parse_cloudflare_answer(json.dumps(cf_fake.envelope({"response": "hi"})).encode(), NAME)
    failed = cf_fake.error_body(3040, "Capacity temporarily exceeded, please try again.")
    with pytest.raises(RateLimited):
        im.parse_cloudflare_answer(json.dumps(failed).encode(), NAME)
    with pytest.raises(UpstreamError, match="Internal server error"):
        im.parse_cloudflare_answer(
            json.dumps(cf_fake.error_body(8005, "Internal server error")).encode(), NAME
        )


# --- errors -----------------------------------------------------------------------------------


def _json(body) -> bytes:
    return json.dumps(body).encode()


def test_content_policy_is_a_400_with_the_upstream_message_and_code() -> None:
    error = im.parse_error("openai", 400, _json(error_body("content_policy")), {}, NAME)
    assert isinstance(error, UpstreamBadRequest) and error.status == 400 and not error.retryable
    assert error.code == "content_policy_violation"
    assert "safety system" in error.message


@pytest.mark.parametrize(
    ("shape", "status", "body", "headers", "cls", "http"),
    [
        ("openai", 401, _json(error_body("invalid_api_key")), {}, UpstreamAuthError, 502),
        ("openai", 403, b"Forbidden", {}, UpstreamAuthError, 502),
        ("openai", 429, _json(error_body("rate_limit")), {"retry-after": "7"}, RateLimited, 429),
        ("openai", 500, _json(error_body("server_error")), {}, UpstreamError, 502),
        (
            "raw",
            503,
            b'{"error": "Model is currently loading", "estimated_time": 20}',
            {},
            UpstreamError,
            502,
        ),
        ("raw", 400, b'{"error": "Input should be a valid string"}', {}, UpstreamBadRequest, 400),
        (
            "cloudflare",
            401,
            _json(cf_fake.error_body(10000, "Authentication error")),
            {},
            UpstreamAuthError,
            502,
        ),
        ("cloudflare", 429, _json(cf_fake.error_body(4006, "daily")), {}, RateLimited, 429),
        ("cloudflare", 400, _json(cf_fake.error_body(5006, "oneOf not met")), {}, UpstreamBadRequest, 400),
        ("cloudflare", 500, _json(cf_fake.error_body(8005, "Internal")), {}, UpstreamError, 502),
    ],
)
def test_error_mapping(shape, status, body, headers, cls, http) -> None:
    error = im.parse_error(shape, status, body, headers, NAME)
    assert type(error) is cls and error.status == http
    if status == 429 and shape == "openai":
        assert error.retry_after == 7
    if status == 400:
        assert "valid string" in error.message or "oneOf" in error.message


# --- the adapter object -----------------------------------------------------------------------


def test_build_provider_gives_image_models_the_image_adapter() -> None:
    http = HttpConfig()
    provider = build_provider(model("hf/flux", "openai", HF_URL, token="hf_x"), SessionPool(http), http)
    assert isinstance(provider, im.ImageProvider) and provider.shape == "raw" and provider.url == HF_URL
    with pytest.raises(InvalidRequest, match="generates images"):
        provider.complete({"messages": []})
    with pytest.raises(InvalidRequest, match="generates images"):
        provider.stream({"messages": []})


def test_a_provider_without_an_image_api_fails_as_an_upstream_error() -> None:
    http = HttpConfig()
    gemini = model("gemini/imagen", "gemini", "https://generativelanguage.googleapis.com/v1beta/models")
    provider = build_provider(gemini, SessionPool(http), http)
    with pytest.raises(UpstreamError, match="no image API"):
        provider.generate_image({"prompt": "x"})


@pytest.mark.parametrize(
    ("url", "together"),
    [
        (TOGETHER_URL, True),
        ("https://api.together.ai/v1/images/generations", True),
        ("https://nottogether.ai/v1/images/generations", False),
        (OPENAI_URL, False),
    ],
)
def test_together_is_told_by_host(url: str, together: bool) -> None:
    assert im.is_together(url) is together
