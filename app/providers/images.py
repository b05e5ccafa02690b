"""Image models (`kind: image`): one adapter, three wire shapes, chosen once from provider and URL.

- `openai`: a URL ending `/images/generations` (OpenAI, Together, any compatible service). Request
  `{model, prompt, n, size?, response_format: "b64_json"}` plus the client's other fields; no
  `response_format` for `gpt-image-*` (they always answer base64); Together gets its own `"base64"`
  and `width`/`height` for `size`. Answer `data[].b64_json`, or `data[].url` (downloaded; `data:` URLs
  decoded); `revised_prompt` is kept.
- `cloudflare`: `provider: cloudflare`, called at `{url}/{upstream_model}` (a URL already holding a
  `/@…` model id is used as is). Request `{prompt}` plus the native inputs the client set (`steps`,
  `seed`, `width`, ...). Answer JSON `{"result": {"image": "<base64>"}}` (flux) or the raw image
  (stable-diffusion); errors in the v4 envelope.
- `raw`: `provider: openai`/`groq`/`openrouter` with any other URL (the Hugging Face router, ...).
  Request `{"inputs": prompt, "parameters"?}`, `size` as `parameters.width/height`; answer the raw
  image bytes.

`n`: the `openai` shape passes `n` upstream in one call. The one-image-per-call shapes are called `n`
times in turn; when a later call fails, the images already made are returned (fewer than asked)
rather than thrown away; a failing first call raises.

Every image is checked by its magic bytes (PNG, JPEG, GIF, WebP) and a per-format floor on its size;
anything else (HTML, JSON, a truncated file) is an UpstreamError (502), never an image. The content
type always comes from those bytes, never from the upstream's header. Answers are read with a size
cap; downloads also with a total deadline.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
import urllib3.exceptions

from app.config import HttpConfig, ModelConfig
from app.errors import InvalidRequest, ProxyError, UpstreamBadRequest, UpstreamError, UpstreamTimeout
from app.http import SessionPool
from app.providers import CLOUDFLARE_IMAGES, OPENAI_IMAGES, cloudflare, image_shape
from app.providers.base import (
    MAX_ERROR_BODY,
    ChunkStream,
    Completion,
    Image,
    ImageResult,
    Provider,
    bearer_headers,
)
from app.providers.shape import (
    TRANSLATION_ERRORS,
    answer_error,
    error_for_status,
    malformed,
    openai_error_message,
)

MAX_IMAGE_BYTES = 32 * 1024 * 1024  # one image: a raw answer or a download
MAX_ANSWER_BYTES = 96 * 1024 * 1024  # a JSON answer: up to 10 base64 images
DOWNLOAD_CHUNK = 64 * 1024
TOGETHER_DOMAINS = ("together.xyz", "together.ai")
# client fields that never go upstream as they are: ours to set, or streaming we can't relay
OPENAI_OWN_FIELDS = frozenset({"model", "response_format", "stream", "partial_images"})
# Workers AI text-to-image inputs copied when the client set them (each model takes a subset)
CLOUDFLARE_INPUTS = (
    "steps",
    "num_steps",
    "seed",
    "width",
    "height",
    "negative_prompt",
    "guidance",
    "strength",
)
SIZE = re.compile(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*")
DATA_URL = re.compile(r"data:[^,;]*(?:;[^,;]*)*;base64,", re.IGNORECASE)

# --- magic bytes ----------------------------------------------------------------------------

# format -> smallest file that can hold a picture: a 1x1 PNG is 67+ bytes, a 1x1 GIF 35, a 1x1
# lossless WebP 34, and no JPEG with its tables fits in under 100
MIN_BYTES = {"image/png": 67, "image/jpeg": 100, "image/gif": 35, "image/webp": 30}


def sniff_image(data: bytes) -> str | None:
    """The content type told by the file's magic bytes, or None when it is not an image we know."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_problem(data: bytes) -> str | None:
    """Why `data` is not a usable image (None when it is one)."""
    kind = sniff_image(data)
    if kind is None:
        return f"not an image ({_describe(data)})"
    if len(data) < MIN_BYTES[kind]:
        return f"a {kind} of only {len(data)} bytes"
    if kind == "image/webp" and int.from_bytes(data[4:8], "little") + 8 > len(data):
        return "a truncated image/webp"
    return None


def checked_image(data: bytes, model_name: str, revised_prompt: str | None = None) -> Image:
    """`data` as an Image typed by its magic bytes; UpstreamError when it isn't one."""
    problem = image_problem(data)
    if problem is not None:
        raise UpstreamError(f"Upstream for model {model_name} answered {problem} instead of an image")
    return Image(data, sniff_image(data) or "application/octet-stream", revised_prompt)


def _describe(data: bytes) -> str:
    if not data:
        return "an empty body"
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        return f"{len(data)} bytes of HTML/XML"
    if head.startswith((b"{", b"[")):
        return f"{len(data)} bytes of JSON"
    return f"{len(data)} bytes of unknown data"


def decode_base64(text: Any, model_name: str) -> bytes:
    """Base64 (or a `data:…;base64,` URL) -> bytes; tolerant of whitespace and missing padding."""
    if not isinstance(text, str) or not text:
        raise UpstreamError(f"Upstream for model {model_name} sent an empty image")
    match = DATA_URL.match(text)
    if match:
        text = text[match.end() :]
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise UpstreamError(f"Upstream for model {model_name} sent an image that is not base64") from None


# --- shapes ---------------------------------------------------------------------------------


def endpoint_url(model: ModelConfig, shape: str | None) -> str:
    """Cloudflare calls `{url}/{upstream_model}` unless the URL already names a model; others `url`."""
    return cloudflare.run_url(model) if shape == CLOUDFLARE_IMAGES else model.url


def parse_size(size: Any) -> tuple[int, int] | None:
    """ "1024x768" -> (1024, 768); anything else (e.g. "auto") -> None."""
    match = SIZE.fullmatch(size) if isinstance(size, str) else None
    return (int(match[1]), int(match[2])) if match else None


def is_together(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == domain or host.endswith("." + domain) for domain in TOGETHER_DOMAINS)


def build_openai_request(body: Mapping[str, Any], upstream_model: str, url: str = "") -> dict[str, Any]:
    """OpenAI Images request for the upstream: always base64 answers, the client's fields otherwise.

    `gpt-image-*` models refuse `response_format` (they always answer base64); Together names it
    `"base64"` and takes `width`/`height` rather than `size`.
    """
    payload = {k: v for k, v in body.items() if k not in OPENAI_OWN_FIELDS and v is not None}
    payload["model"] = upstream_model
    payload["n"] = body.get("n") or 1
    if is_together(url):
        payload["response_format"] = "base64"
        size = parse_size(payload.pop("size", None))
        if size and "width" not in payload and "height" not in payload:
            payload["width"], payload["height"] = size
    elif not upstream_model.split("/")[-1].startswith("gpt-image"):
        payload["response_format"] = "b64_json"
    return payload


def build_cloudflare_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """Workers AI text-to-image input: the prompt and the native inputs the client set. OpenAI's
    `size` is not translated: the accepted sizes differ per model (flux takes none)."""
    payload: dict[str, Any] = {"prompt": body.get("prompt")}
    payload.update({k: body[k] for k in CLOUDFLARE_INPUTS if body.get(k) is not None})
    return payload


def build_raw_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """Hugging Face text-to-image: `{"inputs": prompt, "parameters": {...}}`; `size` becomes
    `width`/`height` unless the client's `parameters` set them."""
    payload: dict[str, Any] = {"inputs": body.get("prompt")}
    parameters = dict(body["parameters"]) if isinstance(body.get("parameters"), dict) else {}
    size = parse_size(body.get("size"))
    if size and "width" not in parameters and "height" not in parameters:
        parameters["width"], parameters["height"] = size
    if parameters:
        payload["parameters"] = parameters
    return payload


@dataclass(slots=True)
class ImageItem:
    """One image of an OpenAI Images answer: its bytes, or the URL to fetch them from."""

    data: bytes | None = None
    url: str | None = None
    revised_prompt: str | None = None


def parse_openai_answer(data: Any, model_name: str) -> list[ImageItem]:
    """`{"data": [{"b64_json" | "url", "revised_prompt"?}]}` -> items (`data:` URLs decoded)."""
    if isinstance(data, dict) and data.get("error"):
        raise answer_error(data["error"], model_name)
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise UpstreamError(f"Upstream for model {model_name} sent an answer without images")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise UpstreamError(f"Upstream for model {model_name} sent an unreadable image entry")
        revised = item.get("revised_prompt") if isinstance(item.get("revised_prompt"), str) else None
        b64, url = item.get("b64_json"), item.get("url")
        if b64:
            out.append(ImageItem(decode_base64(b64, model_name), None, revised))
        elif isinstance(url, str) and DATA_URL.match(url):
            out.append(ImageItem(decode_base64(url, model_name), None, revised))
        elif isinstance(url, str) and urlsplit(url).scheme in ("http", "https"):
            out.append(ImageItem(None, url, revised))
        else:
            raise UpstreamError(f"Upstream for model {model_name} sent an image without data or URL")
    return out


def parse_cloudflare_answer(content: bytes, model_name: str) -> bytes:
    """Raw image bytes as they are, else the v4 envelope's `result.image` (base64)."""
    if sniff_image(content):
        return content
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content  # not JSON either: checked_image says what it is
    if isinstance(data, dict) and data.get("success") is False:
        raise cloudflare.envelope_error(502, data, model_name, {})
    result = data.get("result") if isinstance(data, dict) else None
    image = result.get("image") if isinstance(result, dict) else None
    if not image:
        raise UpstreamError(f"Upstream for model {model_name} sent an answer without an image")
    return decode_base64(image, model_name)


def parse_error(
    shape: str, status: int, body: bytes, headers: Mapping[str, str], model_name: str
) -> ProxyError:
    """An upstream error answer -> our error; a 400's own `code` (content_policy_violation, ...) is kept."""
    if shape == CLOUDFLARE_IMAGES:
        return cloudflare.parse_error(status, body, headers, model_name)
    error = error_for_status(status, openai_error_message(body), model_name, headers)
    if isinstance(error, UpstreamBadRequest):
        code = _error_code(body)
        if code:
            error.code = code
    return error


def _error_code(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code else None


# --- the adapter ----------------------------------------------------------------------------


class ImageProvider(Provider):
    """Any image model; the wire shape is fixed at start from the model's provider and URL."""

    def __init__(self, model: ModelConfig, sessions: SessionPool, http: HttpConfig) -> None:
        super().__init__(model, sessions, http)
        self.transport = sessions.transport(model.provider)
        self.session: requests.Session = self.transport.session
        self.shape = image_shape(model.provider, model.url)
        self.url = endpoint_url(model, self.shape)
        self._headers, _ = bearer_headers(model)
        self._timeout = (http.connect_timeout, http.read_timeout)

    def complete(self, body: dict[str, Any]) -> Completion:
        raise InvalidRequest(f"Model {self.model.name} generates images, not chat", param="model")

    def stream(self, body: dict[str, Any]) -> ChunkStream:
        raise InvalidRequest(f"Model {self.model.name} generates images, not chat", param="model")

    def build_payload(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.shape == OPENAI_IMAGES:
            return build_openai_request(body, self.model.upstream_model, self.url)
        if self.shape == CLOUDFLARE_IMAGES:
            return build_cloudflare_request(body)
        return build_raw_request(body)

    def generate_image(self, body: dict[str, Any]) -> ImageResult:
        if self.shape is None:
            raise UpstreamError(
                f"Model {self.model.name}: provider {self.model.provider} has no image API this proxy "
                "speaks (give it an OpenAI-compatible /images/generations URL)"
            )
        payload = orjson.dumps(self.build_payload(body))
        if self.shape == OPENAI_IMAGES:
            return self._openai(payload)
        wanted = body.get("n") or 1
        images: list[Image] = []
        headers: Mapping[str, str] = {}
        for _ in range(wanted if isinstance(wanted, int) and wanted > 0 else 1):
            try:
                content, headers = self._post(payload, MAX_IMAGE_BYTES)
                images.append(self._one_image(content))
            except ProxyError:
                if not images:
                    raise
                break  # keep what was made; see the module docstring
        return ImageResult(images, headers)

    def _openai(self, payload: bytes) -> ImageResult:
        content, headers = self._post(payload, MAX_ANSWER_BYTES)
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                f"Upstream for model {self.model.name} answered {_describe(content)} instead of images"
            ) from None
        try:
            items = parse_openai_answer(data, self.model.name)
        except TRANSLATION_ERRORS as exc:  # the error boundary: never a 500, never the body
            raise malformed(self.model.name, cause=exc) from None
        images = []
        for item in items:
            raw = item.data if item.data is not None else self._download(item.url or "")
            images.append(checked_image(raw, self.model.name, item.revised_prompt))
        return ImageResult(images, headers)

    def _one_image(self, content: bytes) -> Image:
        """The image of a one-image answer (raw bytes, or Cloudflare's envelope)."""
        try:
            if self.shape == CLOUDFLARE_IMAGES:
                content = parse_cloudflare_answer(content, self.model.name)
            return checked_image(content, self.model.name)
        except TRANSLATION_ERRORS as exc:  # the error boundary: never a 500, never the body
            raise malformed(self.model.name, cause=exc) from None

    # --- transport ---------------------------------------------------------------------------
    def _post(self, payload: bytes, cap: int) -> tuple[bytes, Mapping[str, str]]:
        response = self.transport.post(
            self.url, data=payload, headers=self._headers, stream=False, model_name=self.model.name
        )
        with response:
            if response.status_code >= 400:
                content = self._read(response, MAX_ERROR_BODY, None, truncate=True)
                raise parse_error(
                    self.shape or "", response.status_code, content, response.headers, self.model.name
                )
            return self._read(response, cap, None), response.headers

    def _download(self, url: str) -> bytes:
        """GET an image URL from an answer (no credentials sent), with the size cap and a deadline."""
        name = self.model.name
        try:
            response = self.session.get(url, timeout=self._timeout, stream=True)
        except requests.RequestException as exc:
            # a GET is idempotent, so urllib3 reports its read timeout as retries exhausted
            reason = getattr(exc.args[0] if exc.args else None, "reason", None)
            if isinstance(exc, requests.Timeout) or isinstance(reason, urllib3.exceptions.TimeoutError):
                raise UpstreamTimeout(f"Downloading the image of model {name} timed out") from None
            raise UpstreamError(f"Could not download the image of model {name}") from None
        with response:
            if response.status_code >= 400:
                raise UpstreamError(
                    f"Downloading the image of model {name} failed with HTTP {response.status_code}"
                )
            deadline = time.monotonic() + max(self.http.read_timeout, 1.0)
            return self._read(response, MAX_IMAGE_BYTES, deadline)

    def _read(
        self, response: requests.Response, cap: int, deadline: float | None, truncate: bool = False
    ) -> bytes:
        """The (decoded) body as it arrives, at most `cap` bytes (more is an error unless `truncate`),
        and all of it before `deadline` when one is given."""
        name = self.model.name
        declared = response.headers.get("Content-Length", "")
        if not truncate and declared.isdigit() and int(declared) > cap:
            raise UpstreamError(f"Upstream for model {name} sent an answer larger than {cap} bytes")
        body = bytearray()
        try:
            while chunk := response.raw.read1(DOWNLOAD_CHUNK, decode_content=True):
                body += chunk
                if len(body) > cap:
                    if truncate:
                        return bytes(body[:cap])
                    raise UpstreamError(f"Upstream for model {name} sent an answer larger than {cap} bytes")
                if deadline is not None and time.monotonic() > deadline:
                    raise UpstreamTimeout(f"Downloading the image of model {name} took too long")
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise UpstreamTimeout(f"Upstream for model {name} timed out") from None
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError):
            raise UpstreamError(f"Upstream for model {name} broke off its answer") from None
        return bytes(body)
