"""The image adapter over real HTTP on 127.0.0.1: FakeOpenAI's images route (base64 and `url` answers),
Workers AI image models (flux: JSON base64, stable-diffusion: raw PNG) and the Hugging Face router."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from app.config import HttpConfig, ModelConfig, default_upstream_model
from app.errors import (
    RateLimited,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
)
from app.http import SessionPool
from app.providers import build_provider
from app.providers import images as im
from tests.fakes import cloudflare as cf_fake
from tests.fakes.images import (
    FLUX,
    HF_TOKEN,
    SDXL,
    TINY_JPEG,
    TINY_PNG,
    TINY_WEBP,
    FakeCloudflareImages,
    FakeHuggingFace,
    tiny_jpeg,
)
from tests.fakes.openai import FakeOpenAI, images_body, tiny_png
from tests.fakes.server import Behavior

HTTP = HttpConfig(connect_timeout=2, read_timeout=5)
UPSTREAM_KEY = "sk-fake-upstream-key"
PROMPT = "a red fox in snow"


@pytest.fixture
def cloudflare() -> Iterator[FakeCloudflareImages]:
    with FakeCloudflareImages(gateway_token="gw-secret") as server:
        yield server


@pytest.fixture
def hf() -> Iterator[FakeHuggingFace]:
    with FakeHuggingFace() as server:
        yield server


def adapter(
    name: str,
    provider: str,
    url: str,
    token: str,
    http: HttpConfig = HTTP,
    **extra,
) -> im.ImageProvider:
    upstream = extra.pop("upstream_model", None) or default_upstream_model(name, provider)
    model = ModelConfig(
        name=name, provider=provider, url=url, upstream_model=upstream, token=token, kind="image", **extra
    )
    provider_ = build_provider(model, SessionPool(http), http)
    assert isinstance(provider_, im.ImageProvider)
    return provider_


def dalle(fake: FakeOpenAI, model: str = "openai/dall-e-3", **kwargs) -> im.ImageProvider:
    return adapter(model, "openai", fake.images_url, UPSTREAM_KEY, **kwargs)


def flux(cloudflare: FakeCloudflareImages, name: str = "cloudflare/cf/black-forest-labs/flux-1-schnell"):
    return adapter(name, "cloudflare", cloudflare.run_url, cf_fake.API_TOKEN)


def hf_model(hf: FakeHuggingFace, **kwargs) -> im.ImageProvider:
    return adapter("hf/flux-schnell", "openai", hf.model_url(), HF_TOKEN, **kwargs)


# --- OpenAI-compatible images -----------------------------------------------------------------


def test_openai_base64_answer(fake_openai: FakeOpenAI) -> None:
    result = dalle(fake_openai).generate_image(
        {"model": "IMAGE", "prompt": PROMPT, "n": 1, "size": "1024x1024", "response_format": "url"}
    )
    (image,) = result.images
    assert (image.data, image.content_type) == (TINY_PNG, "image/png")
    assert image.revised_prompt == f"A vivid image: {PROMPT}"
    assert result.headers["x-request-id"].startswith("req_fake")
    (request,) = fake_openai.requests
    assert request.route == "images" and request.path == "/v1/images/generations"
    assert request.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert request.json == {
        "prompt": PROMPT,
        "n": 1,
        "size": "1024x1024",
        "model": "dall-e-3",
        "response_format": "b64_json",
    }


def test_gpt_image_with_n(fake_openai: FakeOpenAI) -> None:
    result = dalle(fake_openai, "openai/gpt-image-1").generate_image({"prompt": PROMPT, "n": 3})
    assert [i.data for i in result.images] == [TINY_PNG] * 3
    assert "response_format" not in fake_openai.requests[0].json


def test_url_answer_is_downloaded_without_credentials(fake_openai: FakeOpenAI) -> None:
    blue = tiny_png((0, 0, 255))
    fake_openai.push("files", Behavior(body=blue, headers={"Content-Type": "application/octet-stream"}))
    answer = images_body("dall-e-3", response_format="url", image_url=f"{fake_openai.url}/files/img-1.png")
    fake_openai.push("images", Behavior(json=answer))
    (image,) = dalle(fake_openai).generate_image({"prompt": PROMPT}).images
    assert (image.data, image.content_type) == (blue, "image/png")  # typed by bytes, not header
    images_request, file_request = fake_openai.requests
    assert images_request.route == "images"
    assert file_request.method == "GET" and file_request.path == "/files/img-1.png"
    assert "Authorization" not in file_request.headers
    assert file_request.headers["User-Agent"] == "ai-proxy"


def test_webp_url_answer(fake_openai: FakeOpenAI) -> None:
    fake_openai.push("files", Behavior(body=TINY_WEBP, headers={"Content-Type": "image/webp"}))
    answer = images_body("dall-e-3", response_format="url", image_url=f"{fake_openai.url}/files/a.webp")
    fake_openai.push("images", Behavior(json=answer))
    (image,) = dalle(fake_openai).generate_image({"prompt": PROMPT}).images
    assert image.content_type == "image/webp"


@pytest.mark.parametrize(
    ("file", "match"),
    [
        (Behavior(status=404, json={"error": "gone"}), "failed with HTTP 404"),
        (Behavior(body=b"<html>AccessDenied</html>", headers={"Content-Type": "image/png"}), "HTML"),
        (Behavior(drop=True), "download the image"),
    ],
)
def test_bad_downloads_are_upstream_errors(fake_openai: FakeOpenAI, file: Behavior, match: str) -> None:
    fake_openai.push("files", file)
    answer = images_body("dall-e-3", response_format="url", image_url=f"{fake_openai.url}/files/img.png")
    fake_openai.push("images", Behavior(json=answer))
    with pytest.raises(UpstreamError, match=match):
        dalle(fake_openai).generate_image({"prompt": PROMPT})


def test_download_size_cap(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(im, "MAX_IMAGE_BYTES", 50)
    answer = images_body("dall-e-3", response_format="url", image_url=f"{fake_openai.url}/files/img.png")
    fake_openai.push("images", Behavior(json=answer))
    with pytest.raises(UpstreamError, match="larger than 50 bytes"):
        dalle(fake_openai).generate_image({"prompt": PROMPT})


def test_download_size_cap_without_content_length(fake_openai: FakeOpenAI, monkeypatch) -> None:
    """A chunked download that never declares its length is cut off at the cap all the same."""
    monkeypatch.setattr(im, "MAX_IMAGE_BYTES", 100)
    fake_openai.push("files", Behavior(events=[TINY_PNG, TINY_PNG], headers={"Content-Type": "image/png"}))
    answer = images_body("dall-e-3", response_format="url", image_url=f"{fake_openai.url}/files/img.png")
    fake_openai.push("images", Behavior(json=answer))
    with pytest.raises(UpstreamError, match="larger than 100 bytes"):
        dalle(fake_openai).generate_image({"prompt": PROMPT})


def test_download_timeout(fake_openai: FakeOpenAI) -> None:
    fake_openai.push("files", Behavior(body=TINY_PNG, delay=3))
    answer = images_body("dall-e-3", response_format="url", image_url=f"{fake_openai.url}/files/img.png")
    fake_openai.push("images", Behavior(json=answer))
    quick = HttpConfig(connect_timeout=1, read_timeout=1)
    with pytest.raises(UpstreamTimeout):
        dalle(fake_openai, http=quick).generate_image({"prompt": PROMPT})


def test_download_deadline_for_a_trickling_body(fake_openai: FakeOpenAI) -> None:
    """Each piece arrives within the read timeout, but the whole takes longer than it."""
    pieces = [TINY_PNG[i : i + 10] for i in range(0, len(TINY_PNG), 10)]
    fake_openai.push("files", Behavior(events=pieces, chunk_delay=0.4, headers={"Content-Type": "image/png"}))
    answer = images_body("dall-e-3", response_format="url", image_url=f"{fake_openai.url}/files/img.png")
    fake_openai.push("images", Behavior(json=answer))
    quick = HttpConfig(connect_timeout=1, read_timeout=1)
    with pytest.raises(UpstreamTimeout, match="took too long"):
        dalle(fake_openai, http=quick).generate_image({"prompt": PROMPT})


def test_content_policy_violation(fake_openai: FakeOpenAI) -> None:
    fake_openai.push_error("content_policy", route="images")
    with pytest.raises(UpstreamBadRequest, match="safety system") as caught:
        dalle(fake_openai).generate_image({"prompt": PROMPT})
    assert caught.value.status == 400 and caught.value.code == "content_policy_violation"


def test_openai_errors(fake_openai: FakeOpenAI) -> None:
    provider = dalle(fake_openai)
    fake_openai.push_error("rate_limit", route="images", retry_after=9)
    with pytest.raises(RateLimited) as caught:
        provider.generate_image({"prompt": PROMPT})
    assert caught.value.retry_after == 9
    fake_openai.push_error("server_error", route="images")
    with pytest.raises(UpstreamError, match="HTTP 500"):
        provider.generate_image({"prompt": PROMPT})
    with pytest.raises(UpstreamAuthError):
        adapter("openai/dall-e-3", "openai", fake_openai.images_url, "sk-wrong").generate_image(
            {"prompt": "x"}
        )


@pytest.mark.parametrize(
    "answer",
    [
        Behavior(
            body=b"<html><body>Service Unavailable</body></html>", headers={"Content-Type": "text/html"}
        ),
        Behavior(json={"created": 1, "data": [{"b64_json": base64.b64encode(b"GIF89a tiny").decode()}]}),
        Behavior(json={"created": 1, "data": [{"b64_json": base64.b64encode(b'{"not": "image"}').decode()}]}),
        Behavior(json={"created": 1, "data": []}),
    ],
)
def test_non_image_openai_answers_are_502(fake_openai: FakeOpenAI, answer: Behavior) -> None:
    fake_openai.push("images", answer)
    with pytest.raises(UpstreamError) as caught:
        dalle(fake_openai).generate_image({"prompt": PROMPT})
    assert caught.value.status == 502


def test_answer_size_cap(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(im, "MAX_ANSWER_BYTES", 64)
    with pytest.raises(UpstreamError, match="larger than 64 bytes"):
        dalle(fake_openai).generate_image({"prompt": PROMPT})


def test_upstream_that_does_not_answer_in_time(fake_openai: FakeOpenAI) -> None:
    fake_openai.push("images", Behavior(json=images_body(), delay=3))
    with pytest.raises(UpstreamTimeout):
        dalle(fake_openai, http=HttpConfig(connect_timeout=1, read_timeout=1)).generate_image({"prompt": "x"})


# --- Cloudflare Workers AI ---------------------------------------------------------------------


def test_cloudflare_flux_json_base64(cloudflare: FakeCloudflareImages) -> None:
    result = flux(cloudflare).generate_image({"model": "IMAGE", "prompt": PROMPT, "n": 1, "steps": 4})
    (image,) = result.images
    assert (image.data, image.content_type, image.revised_prompt) == (TINY_JPEG, "image/jpeg", None)
    (request,) = cloudflare.requests
    assert request.route == "run" and request.params == {"account": cf_fake.ACCOUNT_ID, "model": FLUX}
    assert request.headers["Authorization"] == f"Bearer {cf_fake.API_TOKEN}"
    assert request.json == {"prompt": PROMPT, "steps": 4}


def test_cloudflare_raw_png_model(cloudflare: FakeCloudflareImages) -> None:
    provider = flux(cloudflare, "cloudflare/cf/stabilityai/stable-diffusion-xl-base-1.0")
    (image,) = provider.generate_image({"prompt": PROMPT}).images
    assert (image.data, image.content_type) == (TINY_PNG, "image/png")
    assert cloudflare.requests[0].params["model"] == SDXL


def test_cloudflare_full_model_url_through_ai_gateway(cloudflare: FakeCloudflareImages) -> None:
    provider = adapter(
        "flux-via-gateway",
        "cloudflare",
        f"{cloudflare.gateway_url}/{FLUX}",
        cf_fake.API_TOKEN,
        headers={"cf-aig-authorization": "Bearer gw-secret"},
    )
    assert provider.generate_image({"prompt": PROMPT}).images[0].data == TINY_JPEG
    (request,) = cloudflare.requests
    assert request.route == "gateway" and request.params["model"] == FLUX


def test_cloudflare_n_calls_once_per_image(cloudflare: FakeCloudflareImages) -> None:
    cloudflare.push(
        "run", Behavior(json=cf_fake.envelope({"image": base64.b64encode(tiny_jpeg(3)).decode()}))
    )
    result = flux(cloudflare).generate_image({"prompt": PROMPT, "n": 3})
    assert [i.data for i in result.images] == [tiny_jpeg(3), TINY_JPEG, TINY_JPEG]
    assert len(cloudflare.requests) == 3


def test_cloudflare_n_keeps_what_was_made_when_a_later_call_fails(cloudflare: FakeCloudflareImages) -> None:
    cloudflare.push("run", Behavior(json=cf_fake.envelope({"image": base64.b64encode(TINY_JPEG).decode()})))
    cloudflare.push_error("capacity")
    result = flux(cloudflare).generate_image({"prompt": PROMPT, "n": 3})
    assert [i.data for i in result.images] == [TINY_JPEG]
    assert len(cloudflare.requests) == 2  # stops at the first failure


def test_cloudflare_n_first_failure_raises(cloudflare: FakeCloudflareImages) -> None:
    cloudflare.push_error("daily_limit")
    with pytest.raises(RateLimited) as caught:
        flux(cloudflare).generate_image({"prompt": PROMPT, "n": 2})
    assert caught.value.retry_after and caught.value.retry_after > 0
    assert len(cloudflare.requests) == 1


@pytest.mark.parametrize(
    ("kind", "cls", "status"),
    [
        ("auth", UpstreamAuthError, 502),
        ("capacity", RateLimited, 429),
        ("bad_input", UpstreamBadRequest, 400),
        ("internal", UpstreamError, 502),
    ],
)
def test_cloudflare_errors(cloudflare: FakeCloudflareImages, kind: str, cls: type, status: int) -> None:
    cloudflare.push_error(kind)
    with pytest.raises(cls) as caught:
        flux(cloudflare).generate_image({"prompt": PROMPT})
    assert type(caught.value) is cls and caught.value.status == status


def test_cloudflare_200_with_success_false(cloudflare: FakeCloudflareImages) -> None:
    cloudflare.push("run", Behavior(json=cf_fake.error_body(8005, "Internal server error")))
    with pytest.raises(UpstreamError, match="Internal server error"):
        flux(cloudflare).generate_image({"prompt": PROMPT})


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\x89PNG\r\n\x1a\n", "image/png"),  # a PNG signature and nothing else
        (b"<html><body>Error 1015</body></html>", "text/html"),
    ],
)
def test_cloudflare_non_image_raw_answer(
    cloudflare: FakeCloudflareImages, body: bytes, content_type: str
) -> None:
    cloudflare.push_image(body, content_type=content_type)
    with pytest.raises(UpstreamError, match="instead of an image"):
        flux(cloudflare).generate_image({"prompt": PROMPT})


# --- Hugging Face style raw bytes ---------------------------------------------------------------


def test_hf_raw_jpeg(hf: FakeHuggingFace) -> None:
    (image,) = (
        hf_model(hf).generate_image({"model": "hf/flux-schnell", "prompt": PROMPT, "size": "512x512"}).images
    )
    assert (image.data, image.content_type) == (TINY_JPEG, "image/jpeg")
    (request,) = hf.requests
    assert request.path == "/hf-inference/models/black-forest-labs/FLUX.1-schnell"
    assert request.headers["Authorization"] == f"Bearer {HF_TOKEN}"
    assert request.json == {"inputs": PROMPT, "parameters": {"width": 512, "height": 512}}


def test_hf_n_calls_n_times(hf: FakeHuggingFace) -> None:
    assert len(hf_model(hf).generate_image({"prompt": PROMPT, "n": 2}).images) == 2
    assert len(hf.requests) == 2


def test_hf_model_loading_is_retryable(hf: FakeHuggingFace) -> None:
    loading = {"error": "Model black-forest-labs/FLUX.1-schnell is currently loading", "estimated_time": 20.0}
    hf.push("inference", Behavior(status=503, json=loading))
    with pytest.raises(UpstreamError, match="currently loading") as caught:
        hf_model(hf).generate_image({"prompt": PROMPT})
    assert caught.value.retryable and caught.value.status == 502


def test_hf_wrong_token(hf: FakeHuggingFace) -> None:
    provider = adapter("hf/flux-schnell", "openai", hf.model_url(), "hf_wrong")
    with pytest.raises(UpstreamAuthError):
        provider.generate_image({"prompt": PROMPT})


@pytest.mark.parametrize(
    "answer",
    [
        Behavior(body=b"<!DOCTYPE html><html>Bad Gateway</html>", headers={"Content-Type": "text/html"}),
        Behavior(json={"error": "Internal Server Error"}),
        Behavior(body=b"\xff\xd8\xff\xe0 too short", headers={"Content-Type": "image/jpeg"}),
        Behavior(body=b"", headers={"Content-Type": "image/jpeg"}),
    ],
)
def test_hf_non_image_200_is_502(hf: FakeHuggingFace, answer: Behavior) -> None:
    hf.push("inference", answer)
    with pytest.raises(UpstreamError, match="instead of an image") as caught:
        hf_model(hf).generate_image({"prompt": PROMPT})
    assert caught.value.status == 502


def test_hf_image_size_cap(hf: FakeHuggingFace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(im, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(UpstreamError, match="larger than 100 bytes"):
        hf_model(hf).generate_image({"prompt": PROMPT})


def test_connection_refused_is_an_upstream_error() -> None:
    with FakeHuggingFace() as gone:
        url = gone.model_url()
    provider = adapter("hf/flux-schnell", "openai", url, HF_TOKEN, http=HttpConfig(connect_timeout=1))
    with pytest.raises(UpstreamError, match="Could not connect"):
        provider.generate_image({"prompt": PROMPT})
